"""Projects: create, read, rename, (de)activate."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.models import Project
from omoi_os.services.consolidation.errors import ProjectNotFound
from omoi_os.services.database import (
    DatabaseService,
    SessionFactory,
    as_session_factory,
    read_session,
)


class ProjectService:
    def __init__(
        self, db: Session | DatabaseService | SessionFactory | Engine, *, clock: Clock = utc_now
    ) -> None:
        self._sessions = as_session_factory(db)
        self._clock = clock

    def create(self, name: str, *, is_active: bool = True) -> Project:
        project = Project(name=name, is_active=is_active, created_at=self._clock())
        with self._sessions.begin() as session:
            session.add(project)
        return project

    def get(self, project_id: uuid.UUID) -> Project:
        with read_session(self._sessions) as session:
            project = session.get(Project, project_id)
        if project is None:
            raise ProjectNotFound(project_id)
        return project

    def update(
        self, project_id: uuid.UUID, *, name: str | None = None, is_active: bool | None = None
    ) -> Project:
        """Change the given fields; None leaves a field as it is."""
        with self._sessions.begin() as session:
            project = session.get(Project, project_id, with_for_update=True)
            if project is None:
                raise ProjectNotFound(project_id)
            if name is not None:
                project.name = name
            if is_active is not None:
                project.is_active = is_active
        return project
