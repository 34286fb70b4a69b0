"""Projects: create, read, rename, (de)activate."""

from __future__ import annotations

import uuid

from omoi_os.clock import Clock, utc_now
from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project
from omoi_os.services.database import DatabaseService
from omoi_os.store import projects as project_store


class ProjectService:
    def __init__(self, db: DatabaseService, *, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    def create(self, name: str, *, is_active: bool = True) -> Project:
        with self._db.transaction() as session:
            return project_store.insert_project(
                session, name=name, is_active=is_active, now=self._clock()
            )

    def get(self, project_id: uuid.UUID) -> Project:
        """The project; ProjectNotFound if there is none."""
        with self._db.read() as session:
            project = project_store.get_project(session, project_id)
        if project is None:
            raise ProjectNotFound(project_id)
        return project

    def update(
        self, project_id: uuid.UUID, *, name: str | None = None, is_active: bool | None = None
    ) -> Project:
        """Change the given fields; None leaves a field as it is."""
        with self._db.transaction() as session:
            project = project_store.get_project(session, project_id, for_update=True)
            if project is None:
                raise ProjectNotFound(project_id)
            if name is not None:
                project.name = name
            if is_active is not None:
                project.is_active = is_active
        return project
