"""Reading consolidation jobs: what the HTTP routes and the command line show."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from omoi_os.errors import ProjectNotFound
from omoi_os.models import ConsolidationJob, JobStatus
from omoi_os.services.database import DatabaseService
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store


@dataclass(frozen=True)
class JobPage:
    """One page of jobs, newest first; `next_offset` is None on the last page."""

    items: list[ConsolidationJob]
    limit: int
    offset: int
    next_offset: int | None


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
        limit: int = 50,
        offset: int = 0,
    ) -> JobPage:
        """Jobs, newest first: of one project (ProjectNotFound if it does not exist), or
        of every project."""
        with self._db.read() as session:
            if project_id is not None and not project_store.project_exists(session, project_id):
                raise ProjectNotFound(project_id)
            rows = job_store.list_jobs(
                session, project_id, status=status, limit=limit + 1, offset=offset
            )
        more = len(rows) > limit
        return JobPage(rows[:limit], limit, offset, offset + limit if more else None)
