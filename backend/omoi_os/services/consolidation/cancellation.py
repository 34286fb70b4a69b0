"""Cancelling a job: a pending one ends `cancelled` at once and its queue task is
dropped, so no worker ever runs it; a running one is asked to stop, and its worker
ends it `cancelled` after the batch in progress (the batches committed stay; a later
job does the rest). A job whose last batch is already under way completes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from omoi_os.errors import JobNotCancellable
from omoi_os.models import JobStatus
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store

logger = logging.getLogger(__name__)


class Cancelled(StrEnum):
    AT_ONCE = "at_once"  # it was pending: cancelled now
    STOPPING = "stopping"  # it is running: it stops at the end of its batch


@dataclass(frozen=True)
class Cancellation:
    """What cancel_job did, to be logged once its transaction committed."""

    job_id: int
    how: Cancelled
    by: str
    reason: str

    def log(self) -> None:
        logger.info(
            "job %d: %s by %s (%s)",
            self.job_id,
            "cancelled" if self.how is Cancelled.AT_ONCE else "asked to stop after its batch",
            self.by,
            self.reason,
            extra={
                "action": "job_cancelled",
                "job_id": self.job_id,
                "by": self.by,
                "how": self.how.value,
            },
        )


def cancel_job(
    session: Session,
    queue: TaskQueueService,
    job_id: int,
    *,
    now: datetime,
    by: str,
    reason: str,
) -> Cancellation:
    """Cancel job `job_id` in the caller's transaction (log the answer after it
    commits). Raises JobNotFound, or JobNotCancellable when it has finished; asking
    again while it stops is no error."""
    return Cancellation(job_id, _cancel(session, queue, job_id, now, by, reason), by, reason)


def _cancel(
    session: Session, queue: TaskQueueService, job_id: int, now: datetime, by: str, reason: str
) -> Cancelled:
    job = job_store.get_job(session, job_id)
    if job.status is JobStatus.PENDING:
        # The queue row first (invariant 7, docs/invariants.md), then the job.
        queue.drop_queued(
            session=session,
            task_type=job_store.CONSOLIDATION_TASK,
            task_ids=[job_store.task_id_for_job(job_id)],
            reason=f"job cancelled by {by}: {reason}",
        )
        if job_store.cancel_pending_job(session, job_id, now=now, by=by, reason=reason):
            return Cancelled.AT_ONCE
        # A worker started it meanwhile (its claim held the task): ask it to stop.
    if job_store.request_stop(session, job_id, now=now, by=by, reason=reason):
        return Cancelled.STOPPING
    session.refresh(job)
    if job.status is JobStatus.RUNNING:  # already asked to stop
        return Cancelled.STOPPING
    raise JobNotCancellable(job_id, job.status.value)
