"""The SQL of `projects`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project
from omoi_os.models.base import cast_table
from omoi_os.store.sql import execute_counting


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


def trigger_state(project_id: ColumnElement[Any], *columns: Any) -> Select[Any]:
    """SELECT of what a trigger needs of one project — whether it is active, when its
    cooldown started, whether a crossing is deferred — then `columns` (no row if the
    project does not exist)."""
    return select(
        Project.is_active,
        Project.cooldown_from,
        Project.threshold_crossed_at.is_not(None),
        *columns,
    ).where(Project.id == project_id)


_projects = cast_table(Project)
_START_COOLDOWN = (
    update(_projects)
    .where(_projects.c.id.in_(bindparam("project_ids", expanding=True)))
    .values(cooldown_from=bindparam("at"))
)


def cooldown_statement(project_id: ColumnElement[Any], at: ColumnElement[Any]) -> Update:
    """SQL: the cooldown of project `project_id` (a column of the caller's statement)
    runs from `at`."""
    return update(_projects).where(_projects.c.id == project_id).values(cooldown_from=at)


def start_cooldown(session: Session, project_ids: list[uuid.UUID], *, at: datetime) -> None:
    """The projects' cooldown runs from `at`."""
    if project_ids:
        session.connection().execute(_START_COOLDOWN, {"project_ids": project_ids, "at": at})


def defer_crossing(session: Session, project_id: uuid.UUID, *, at: datetime) -> None:
    """Remember a crossing that cannot fire yet (the first one is kept)."""
    session.execute(
        update(Project)
        .where(Project.id == project_id, Project.threshold_crossed_at.is_(None))
        .values(threshold_crossed_at=at)
    )


def clear_deferred_crossings(
    session: Session, project_ids: Select[Any] | Sequence[uuid.UUID]
) -> int:
    """Forget the deferred crossings of these projects (ids, or a SELECT of them)."""
    if not isinstance(project_ids, Select) and not project_ids:
        return 0
    statement = (
        update(Project)
        .where(Project.id.in_(project_ids), Project.threshold_crossed_at.is_not(None))
        .values(threshold_crossed_at=None)
    )
    return execute_counting(session, statement)


def with_deferred_crossing() -> Select[Any]:
    """SELECT of the projects with a deferred crossing (the partial index serves it)."""
    return select(Project.id).where(Project.threshold_crossed_at.is_not(None))


def cooled_down(project_id: ColumnElement[Any], *, before: datetime) -> ColumnElement[bool]:
    """SQL: the project is active and its cooldown, if any, started before `before`."""
    project = select(Project.id).where(
        Project.id == project_id,
        Project.is_active,
        or_(Project.cooldown_from.is_(None), Project.cooldown_from <= before),
    )
    return project.exists()
