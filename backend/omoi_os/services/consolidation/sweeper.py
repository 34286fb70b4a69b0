"""The sweeper: the other thing, beside the worker, that ends jobs.

It frees projects whose job can no longer finish on its own: a job running past
`consolidation_timeout` plus a grace (its worker died or hangs) becomes `timed_out`
and its queue task is abandoned, fencing out a worker that might still wake up; an
active job whose queue task is dead (its attempts ran out) becomes `failed`. Without
it, a dead job would block its project forever (invariant 4, docs/invariants.md).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from omoi_os.clock import Clock
from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import JobStatus
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store

logger = logging.getLogger(__name__)

# A job may overrun consolidation_timeout by this much before the sweeper calls it
# dead: the worker enforces the timeout itself; the sweeper is for dead workers.
TIMEOUT_GRACE = timedelta(seconds=60)


class Sweeper:
    """Ends jobs that cannot finish."""

    def __init__(
        self,
        db: DatabaseService,
        queue: TaskQueueService,
        *,
        settings: AppSettings,
        clock: Clock,
        metrics: ConsolidationMetrics,
    ) -> None:
        self._db = db
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self._metrics = metrics

    def sweep(self) -> list[int]:
        """End overdue jobs (timed_out) and jobs whose task died (failed), in one
        transaction. Returns the ids of the jobs it ended."""
        now = self._clock()
        timeout = self._settings.consolidation_timeout
        reason = (
            f"ran longer than consolidation_timeout ({timeout} s) plus "
            f"{TIMEOUT_GRACE.seconds} s; ended by the sweeper"
        )
        started_before = now - timedelta(seconds=timeout) - TIMEOUT_GRACE
        with self._db.transaction() as session:
            overdue = job_store.overdue_job_ids(session, started_before=started_before)
            # Queue rows before job rows (invariant 7, docs/invariants.md).
            self._queue.abandon(
                session=session,
                task_type=job_store.CONSOLIDATION_TASK,
                task_ids=[job_store.task_id_for_job(job_id) for job_id in overdue],
                reason=reason,
            )
            timed_out = job_store.time_out_jobs(
                session, overdue, started_before=started_before, now=now, reason=reason
            )
            dead_task = self._queue.dead_task(
                job_store.CONSOLIDATION_TASK, job_store.job_task_id_sql()
            )
            failed = job_store.fail_active_jobs(session, dead_task=dead_task, now=now)
            # A job that failed or timed out starts its project's cooldown (retry storms).
            ended = [project_id for _, project_id in timed_out + failed]
            project_store.start_cooldown(session, ended, at=now)
        self._report(JobStatus.TIMED_OUT, timed_out, "timed out")
        self._report(JobStatus.FAILED, failed, "failed: its queue task is dead")
        return [job_id for job_id, _ in timed_out + failed]

    def _report(self, status: JobStatus, ended: list[tuple[int, uuid.UUID]], what: str) -> None:
        self._metrics.jobs_finished.labels(status.value).inc(len(ended))
        for job_id, project_id in ended:
            logger.warning(
                "sweeper: job %d of project %s %s",
                job_id,
                project_id,
                what,
                extra={
                    "action": "job_swept",
                    "status": status.value,
                    "job_id": job_id,
                    "project_id": str(project_id),
                },
            )
