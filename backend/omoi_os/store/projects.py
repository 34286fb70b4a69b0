"""The SQL of `projects`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project


def parse_project_id(project_id: uuid.UUID | str) -> uuid.UUID:
    """A project id from a UUID or its text; anything else names no project."""
    if isinstance(project_id, uuid.UUID):
        return project_id
    try:
        return uuid.UUID(str(project_id))
    except ValueError:
        raise ProjectNotFound(project_id) from None


def insert_project(session: Session, *, name: str, is_active: bool, now: datetime) -> Project:
    project = Project(name=name, is_active=is_active, created_at=now)
    session.add(project)
    session.flush()
    return project


def get_project(
    session: Session, project_id: uuid.UUID, *, for_update: bool = False
) -> Project | None:
    """The project, or None; `for_update` locks its row until the transaction ends."""
    return session.get(Project, project_id, with_for_update=for_update or None)


def project_exists(session: Session, project_id: uuid.UUID) -> bool:
    return session.scalar(select(Project.id).where(Project.id == project_id)) is not None


def project_is_active(session: Session, project_id: uuid.UUID) -> bool | None:
    """Whether the project is active; None if there is no such project."""
    return session.scalar(select(Project.is_active).where(Project.id == project_id))


def active_project_ids() -> Select[Any]:
    """SELECT of every active project's id (the scheduled tick's candidates)."""
    return select(Project.id).where(Project.is_active)


def count_active_projects(session: Session) -> int:
    return session.scalar(select(func.count()).where(Project.is_active)) or 0


def project_status_with(project_id: ColumnElement[Any], *columns: Any) -> Select[Any]:
    """SELECT of whether the project is active, then `columns`, for that one project
    (no row if it does not exist)."""
    return select(Project.is_active, *columns).where(Project.id == project_id)
