"""TaskQueueService: a durable queue in the backend's own database, for any task type.

Life of a task: `enqueue` (idempotent on task_type + task_id) → `claim` (a lease for
one worker) → `complete`, or `fail` (retried with the RetryPolicy's backoff, dead
after max_attempts), or `release` (handed back unfinished). A worker that dies leaves
its lease to expire; `reclaim_expired` puts the task back.

Every method works inside the caller's transaction, passed as `session=`: the caller
decides what commits together (a job row and its task; a claim and the job it
starts). The SQL is the store's (store/tasks.py), one statement per operation; what
differs between the databases (inserting a batch, waking workers) is the engine's
(omoi_os.engines). Claiming uses `FOR UPDATE SKIP LOCKED` on PostgreSQL, so
concurrent workers never take the same task; on SQLite the statement runs under the
database's single write lock, which is just as atomic. Every write after a claim is
fenced by the claim's own token (invariant 6, docs/invariants.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.engines import engine_for
from omoi_os.engines.listener import NOTIFY_CHANNEL, QueueListener
from omoi_os.models import TaskState
from omoi_os.services.retry_policy import RetryPolicy
from omoi_os.store import tasks as task_store
from omoi_os.store.tasks import ClaimedTask

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_ATTEMPTS",
    "NOTIFY_CHANNEL",
    "ClaimedTask",
    "FailOutcome",
    "QueueListener",
    "RetryPolicy",
    "TaskQueueService",
]

logger = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_MAX_ATTEMPTS = 5


class FailOutcome(StrEnum):
    RETRY = "retry"  # queued again after the backoff
    DEAD = "dead"  # that was the last attempt
    NOT_HELD = "not_held"  # the lease was lost; someone else owns the task now


class TaskQueueService:
    """Enqueue, claim, extend, complete, fail, release and reclaim tasks."""

    def __init__(
        self,
        *,
        clock: Clock = utc_now,
        lease: timedelta = DEFAULT_LEASE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._clock = clock
        self.lease = lease
        self.max_attempts = max_attempts
        self.retry = retry or RetryPolicy()

    # --- putting tasks in -----------------------------------------------------------

    def enqueue(
        self, *, session: Session, task_type: str, tasks: Sequence[tuple[str, datetime | None]]
    ) -> int:
        """Queue each (task_id, available_at) of `tasks` (available_at None: now) unless
        that task_id is already queued. Returns how many were queued now."""
        if not tasks:
            return 0
        now = self._clock()
        rows = [
            {
                "task_type": task_type,
                "task_id": task_id,
                "max_attempts": self.max_attempts,
                "available_at": available_at or now,
                "created_at": now,
            }
            for task_id, available_at in tasks
        ]
        engine = engine_for(session)
        queued = engine.enqueue(session, rows)
        if queued:
            engine.notify(session, task_type)
        return queued

    def enqueue_select(self, *, session: Session, task_type: str, task_ids: Select[Any]) -> int:
        """Queue a task, claimable now, for each task id `task_ids` yields (one text
        column) unless it is already queued; set-based, so the ids never come to Python.
        Returns how many were queued."""
        queued = task_store.insert_selected(
            session,
            task_type=task_type,
            task_ids=task_ids,
            max_attempts=self.max_attempts,
            now=self._clock(),
        )
        if queued:
            engine_for(session).notify(session, task_type)
        return queued

    # --- a worker's tasks -----------------------------------------------------------

    def claim(
        self,
        *,
        session: Session,
        task_types: Iterable[str],
        worker_id: str,
        limit: int = 1,
        lease: timedelta | None = None,
    ) -> list[ClaimedTask]:
        """Lease up to `limit` due tasks of `task_types` to `worker_id`, oldest first."""
        parameters = self.claim_parameters(task_types, worker_id, limit=limit, lease=lease)
        return task_store.claim(session, parameters)

    def claim_parameters(
        self,
        task_types: Iterable[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease: timedelta | None = None,
    ) -> dict[str, Any]:
        """store.tasks.CLAIM's parameters: a new claim token, and a lease from now."""
        now = self._clock()
        return {
            "task_types": list(task_types),
            "now": now,
            "limit": limit,
            "worker_id": worker_id,
            "claim_token": uuid.uuid4().hex,
            "lease_expires_at": now + (lease or self.lease),
        }

    def complete_parameters(self, task: ClaimedTask, worker_id: str) -> dict[str, Any]:
        """store.tasks.COMPLETE's parameters for a task this worker holds."""
        return task_store.fence(task, worker_id) | {"finished_at": self._clock()}

    def extend_lease(
        self, *, session: Session, task: ClaimedTask, worker_id: str, lease: timedelta | None = None
    ) -> bool:
        """Push the lease of a task this worker still holds; False if it lost it."""
        expires_at = self._clock() + (lease or self.lease)
        held = task_store.extend(session, task_store.fence(task, worker_id), expires_at=expires_at)
        return self._reported(held, task, worker_id)

    def complete(self, *, session: Session, task: ClaimedTask, worker_id: str) -> bool:
        """Mark a held task done; False if the lease was lost (the task is not ours)."""
        held = task_store.complete(session, task_store.fence(task, worker_id), now=self._clock())
        return self._reported(held, task, worker_id)

    def fail(
        self, *, session: Session, task: ClaimedTask, worker_id: str, error: str
    ) -> FailOutcome:
        """Record a failed attempt: queue it again after the backoff, or let it die."""
        now, fenced_by = self._clock(), task_store.fence(task, worker_id)
        if task.attempts >= task.max_attempts:
            outcome = FailOutcome.DEAD
            held = task_store.give_up(session, fenced_by, error=error, now=now)
        else:
            outcome = FailOutcome.RETRY
            retry_at = now + self.retry.delay(task.attempts)
            held = task_store.retry_later(session, fenced_by, error=error, retry_at=retry_at)
        return outcome if self._reported(held, task, worker_id) else FailOutcome.NOT_HELD

    def release(self, *, session: Session, task: ClaimedTask, worker_id: str) -> bool:
        """Give a held task back unfinished, claimable at once (its worker is stopping);
        the attempt is not counted against it."""
        held = task_store.release(session, task_store.fence(task, worker_id), now=self._clock())
        return self._reported(held, task, worker_id)

    def next_available_at(self, *, session: Session, task_types: Iterable[str]) -> datetime | None:
        """When the earliest queued task of these types becomes claimable."""
        return task_store.next_available_at(session, task_types=list(task_types))

    # --- tasks taken away from their workers ------------------------------------------

    def reclaim_expired(self, *, session: Session) -> int:
        """Requeue tasks whose lease ran out (their worker died); a task that has used
        all its attempts goes dead instead. Returns how many tasks changed."""
        reclaimed = task_store.reclaim_expired(session, now=self._clock())
        if reclaimed:
            logger.warning(
                "reclaimed %d task(s) whose lease expired",
                reclaimed,
                extra={"action": "tasks_reclaimed", "count": reclaimed},
            )
        return reclaimed

    def abandon(self, *, session: Session, task_type: str, task_ids: list[str], reason: str) -> int:
        """Give up on unfinished tasks (their work was cancelled or timed out elsewhere).
        A worker still holding one is fenced out."""
        if not task_ids:
            return 0
        return task_store.abandon(
            session, task_type=task_type, task_ids=task_ids, reason=reason, now=self._clock()
        )

    def drop_queued(
        self, *, session: Session, task_type: str, task_ids: list[str], reason: str
    ) -> int:
        """Finish queued tasks unrun (their work was cancelled): no worker will claim
        them. A claimed task is left to its worker. Returns how many were dropped."""
        return task_store.drop_queued(
            session, task_type=task_type, task_ids=task_ids, reason=reason, now=self._clock()
        )

    # --- reading ----------------------------------------------------------------------

    @staticmethod
    def dead_task(task_type: str, task_id: ColumnElement[str]) -> Select[str | None]:
        """SQL: the last error of the task `task_id` (a column of the caller's query) of
        `task_type`, if that task is dead; no row otherwise."""
        return task_store.dead_task(task_type, task_id)

    @staticmethod
    def depth(*, session: Session) -> dict[tuple[str, TaskState], int]:
        """Unfinished tasks by (task_type, state), for metrics. Done and dead tasks are
        history and are not counted."""
        return task_store.depth(session)

    @staticmethod
    def oldest_claimable_at(*, session: Session, task_type: str, now: datetime) -> datetime | None:
        """When the longest-waiting task of `task_type` that is claimable at `now` became
        claimable (None if none is), at the same cost however deep the queue is."""
        return task_store.oldest_claimable_at(session, task_type=task_type, now=now)

    @staticmethod
    def report_not_held(task: ClaimedTask, worker_id: str) -> None:
        """Log that a fenced write found `task` no longer held by `worker_id`."""
        logger.warning(
            "task %s (%s %s) is no longer held by %s",
            task.id,
            task.task_type,
            task.task_id,
            worker_id,
            extra={"action": "task_not_held", "task_id": task.task_id, "worker": worker_id},
        )

    def _reported(self, held: bool, task: ClaimedTask, worker_id: str) -> bool:
        if not held:
            self.report_not_held(task, worker_id)
        return held
