"""Projects: create, read, rename, (de)activate (which cancels the active job)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project
from omoi_os.services.consolidation.cancellation import Cancelled, cancel_job
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store

logger = logging.getLogger(__name__)

DEACTIVATED = "project deactivated"


class ProjectService:
    def __init__(
        self,
        db: DatabaseService,
        *,
        queue: TaskQueueService | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._queue = queue or TaskQueueService(clock=clock)
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
        self,
        project_id: uuid.UUID,
        *,
        name: str | None = None,
        is_active: bool | None = None,
        by: str = job_store.SYSTEM_PRINCIPAL,
    ) -> Project:
        """Change the given fields; None leaves a field as it is. Deactivating cancels
        the project's pending job and stops its running one after the batch in progress
        (recorded as done by `by`, because the project was deactivated)."""
        with self._db.transaction() as session:
            project = project_store.get_project(session, project_id, for_update=True)
            if project is None:
                raise ProjectNotFound(project_id)
            if name is not None:
                project.name = name
            if is_active is False and project.is_active:
                self._cancel_active_job(session, project_id, by)
            if is_active is not None:
                project.is_active = is_active
        return project

    def _cancel_active_job(self, session: Session, project_id: uuid.UUID, by: str) -> None:
        job_id = job_store.active_job_id(session, project_id)
        if job_id is not None:
            how = cancel_job(
                session, self._queue, job_id, now=self._clock(), by=by, reason=DEACTIVATED
            )
            logger.info(
                "project %s deactivated by %s: its job %d %s",
                project_id,
                by,
                job_id,
                "cancelled" if how is Cancelled.AT_ONCE else "stops after its batch",
                extra={"action": "job_cancelled", "job_id": job_id, "by": by, "how": how.value},
            )
