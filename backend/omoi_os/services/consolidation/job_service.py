"""Reading consolidation jobs: what the HTTP routes and the command line show."""

from __future__ import annotations

import uuid

from omoi_os.errors import ProjectNotFound
from omoi_os.models import ConsolidationJob, JobStatus, TriggerType
from omoi_os.services.database import DatabaseService
from omoi_os.services.paging import Page
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store

# One page of jobs, newest first.
JobPage = Page[ConsolidationJob]


class JobService:
    def __init__(self, db: DatabaseService) -> None:
        self._db = db

    def get(self, job_id: int) -> ConsolidationJob:
        """The job; JobNotFound if there is none."""
        with self._db.read() as session:
            return job_store.get_job(session, job_id)

    def list(
        self,
        *,
        project_id: uuid.UUID | None = None,
        status: JobStatus | None = None,
        trigger_type: TriggerType | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> JobPage:
        """Jobs, newest first: of one project (ProjectNotFound if it does not exist), or
        of every project; only those in `status` and of `trigger_type`, if given."""
        with self._db.read() as session:
            if project_id is not None and not project_store.project_exists(session, project_id):
                raise ProjectNotFound(project_id)
            rows = job_store.list_jobs(
                session,
                project_id,
                status=status,
                trigger_type=trigger_type,
                limit=limit + 1,
                offset=offset,
            )
        return JobPage.cut(rows, limit=limit, offset=offset)
