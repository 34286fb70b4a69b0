"""Reading and cancelling consolidation jobs: what the HTTP routes and the command
line show and do (retrying is a trigger: ConsolidationTriggerService.retry)."""

from __future__ import annotations

import uuid

from omoi_os.clock import Clock, utc_now
from omoi_os.errors import ProjectNotFound
from omoi_os.models import ConsolidationJob, JobStatus, TriggerType
from omoi_os.services.awaitable import awaitable
from omoi_os.services.consolidation.cancellation import Cancelled, cancel_job
from omoi_os.services.database import DatabaseService
from omoi_os.services.paging import Page
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store

# One page of jobs, newest first.
JobPage = Page[ConsolidationJob]


class JobService:
    """Jobs as operators see them: read one, list them, cancel one. Every method is
    awaitable; its synchronous twin ends in `_sync`."""

    def __init__(
        self,
        db: DatabaseService,
        *,
        queue: TaskQueueService,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._queue = queue
        self._clock = clock

    def get_sync(self, job_id: int) -> ConsolidationJob:
        """The job; JobNotFound if there is none."""
        with self._db.read() as session:
            return job_store.get_job(session, job_id)

    def cancel_sync(
        self, job_id: int, *, by: str, reason: str | None = None
    ) -> tuple[ConsolidationJob, Cancelled]:
        """Cancel a pending job at once, or ask a running one to stop after its batch.
        Raises JobNotFound, or JobNotCancellable (it finished); writes nothing then."""
        with self._db.transaction() as session:
            cancelled = cancel_job(
                session,
                self._queue,
                job_id,
                now=self._clock(),
                by=by,
                reason=reason or "cancelled",
            )
            job = job_store.get_job(session, job_id)
        cancelled.log()
        return job, cancelled.how

    def list_sync(
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

    get = awaitable(get_sync)
    cancel = awaitable(cancel_sync)
    list = awaitable(list_sync)
