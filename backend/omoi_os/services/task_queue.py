"""TaskQueueService: a durable queue in the backend's own database.

Life of a task: `enqueue` (idempotent on task_type + task_id, inside the caller's
transaction when given one) → `claim` (a lease for one worker) → `complete`, or
`fail` (retried with exponential backoff, dead after max_attempts). A worker that
dies leaves its lease to expire; `reclaim_expired` puts the task back.

Each operation is one SQL statement. Claiming uses `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so concurrent workers never take the same task; on SQLite the
statement runs under the database's single write lock, which is just as atomic.
Every write after a claim is fenced by the claim's own token: a worker whose
lease was taken over cannot complete, fail or release the task any more.

On PostgreSQL, enqueueing NOTIFYs `NOTIFY_CHANNEL` (delivered at commit), so a
listening worker wakes at once; on SQLite workers poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from sqlalchemy import Engine, Select, case, func, literal, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.models import QueuedTask, TaskState
from omoi_os.models.base import cast_table
from omoi_os.services.database import (
    DatabaseService,
    SessionFactory,
    as_session_factory,
    execute_counting,
    insert_ignoring_conflicts,
    read_session,
    transaction_scope,
)

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "omoi_task_queue"
# Bound with the column's own type (UTC handling), also where SQL builds the value.
_finished_at_type = cast_table(QueuedTask).c.finished_at.type
DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts: base, 2·base, 4·base … capped."""

    base_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(minutes=10)

    def delay(self, failed_attempts: int) -> timedelta:
        """How long to wait after the `failed_attempts`-th failure."""
        exponent = min(max(failed_attempts - 1, 0), 30)
        return min(self.base_delay * (1 << exponent), self.max_delay)


@dataclass(frozen=True)
class ClaimedTask:
    """A task leased to one worker; `claim_token` is this claim's and fences it."""

    id: int
    task_type: str
    task_id: str
    payload: dict[str, Any]
    attempts: int  # this claim included
    max_attempts: int
    lease_expires_at: datetime
    claim_token: str


class FailOutcome(StrEnum):
    RETRY = "retry"  # queued again after the backoff
    DEAD = "dead"  # that was the last attempt
    NOT_HELD = "not_held"  # the lease was lost; someone else owns the task now


class TaskQueueService:
    """Enqueue, claim, extend, complete, fail and reclaim tasks."""

    def __init__(
        self,
        db: Session | DatabaseService | SessionFactory | Engine,
        *,
        clock: Clock = utc_now,
        lease: timedelta = DEFAULT_LEASE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._sessions = as_session_factory(db)
        self._clock = clock
        self.lease = lease
        self.max_attempts = max_attempts
        self.retry = retry or RetryPolicy()

    def enqueue(
        self,
        task_type: str,
        task_id: str,
        payload: dict[str, Any] | None = None,
        *,
        session: Session | None = None,
        available_at: datetime | None = None,
        max_attempts: int | None = None,
    ) -> bool:
        """Queue a task unless (task_type, task_id) is already queued; True if queued now."""
        now = self._clock()
        with transaction_scope(self._sessions, session) as tx:
            statement = (
                insert_ignoring_conflicts(tx, QueuedTask)
                .values(
                    task_type=task_type,
                    task_id=task_id,
                    payload=payload or {},
                    state=TaskState.QUEUED,
                    attempts=0,
                    max_attempts=max_attempts or self.max_attempts,
                    available_at=available_at or now,
                    created_at=now,
                )
                .returning(QueuedTask.id)
            )
            queued = tx.execute(statement).scalar_one_or_none() is not None
            if queued:
                self._notify(tx, task_type)
        return queued

    def enqueue_select(
        self,
        session: Session,
        task_type: str,
        task_ids: Select[Any],
        payload: dict[str, Any] | None = None,
        *,
        available_at: datetime | None = None,
    ) -> int:
        """Queue one task per id `task_ids` yields, in one INSERT … SELECT, inside the
        caller's transaction. Ids already queued are skipped. Returns how many were queued."""
        now = self._clock()
        ids = task_ids.subquery()
        rows = select(
            literal(task_type),
            ids.c[0],
            literal(payload or {}, QueuedTask.__table__.c.payload.type),
            literal(TaskState.QUEUED.value),
            literal(0),
            literal(self.max_attempts),
            literal(available_at or now, QueuedTask.__table__.c.available_at.type),
            literal(now, QueuedTask.__table__.c.created_at.type),
        ).where(ids.c[0].is_not(None))
        columns = [
            "task_type",
            "task_id",
            "payload",
            "state",
            "attempts",
            "max_attempts",
            "available_at",
            "created_at",
        ]
        statement = insert_ignoring_conflicts(session, QueuedTask).from_select(columns, rows)
        queued = execute_counting(session, statement)
        if queued:
            self._notify(session, task_type)
        return queued

    def claim(
        self,
        task_types: Iterable[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease: timedelta | None = None,
    ) -> list[ClaimedTask]:
        """Lease up to `limit` due tasks of `task_types` to `worker_id`, oldest first."""
        now = self._clock()
        expires = now + (lease or self.lease)
        due = (
            select(QueuedTask.id)
            .where(
                QueuedTask.state == TaskState.QUEUED,
                QueuedTask.task_type.in_(list(task_types)),
                QueuedTask.available_at <= now,
            )
            .order_by(QueuedTask.available_at, QueuedTask.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
        )
        statement = (
            update(QueuedTask)
            .where(QueuedTask.id == due.c.id)
            .values(
                state=TaskState.CLAIMED,
                claimed_by=worker_id,
                claim_token=uuid.uuid4().hex,
                lease_expires_at=expires,
                attempts=QueuedTask.attempts + 1,
            )
            .returning(
                QueuedTask.id,
                QueuedTask.task_type,
                QueuedTask.task_id,
                QueuedTask.payload,
                QueuedTask.attempts,
                QueuedTask.max_attempts,
                QueuedTask.lease_expires_at,
                QueuedTask.claim_token,
            )
        )
        with self._sessions.begin() as session:
            rows = session.execute(statement).all()
        return sorted((ClaimedTask(*row) for row in rows), key=lambda task: task.id)

    def extend_lease(
        self,
        task: ClaimedTask,
        worker_id: str,
        lease: timedelta | None = None,
        *,
        session: Session | None = None,
    ) -> bool:
        """Push the lease of a task this worker still holds; False if it lost it."""
        expires = self._clock() + (lease or self.lease)
        return self._update_held(task, worker_id, session, lease_expires_at=expires)

    def complete(
        self, task: ClaimedTask, worker_id: str, *, session: Session | None = None
    ) -> bool:
        """Mark a held task done; False if the lease was lost (the task is not ours)."""
        return self._update_held(
            task,
            worker_id,
            session,
            state=TaskState.DONE,
            finished_at=self._clock(),
            lease_expires_at=None,
        )

    def fail(
        self, task: ClaimedTask, worker_id: str, error: str, *, session: Session | None = None
    ) -> FailOutcome:
        """Record a failed attempt: queue it again after the backoff, or let it die."""
        now = self._clock()
        if task.attempts >= task.max_attempts:
            outcome, values = FailOutcome.DEAD, {"state": TaskState.DEAD, "finished_at": now}
        else:
            retry_at = now + self.retry.delay(task.attempts)
            outcome, values = (
                FailOutcome.RETRY,
                {"state": TaskState.QUEUED, "available_at": retry_at},
            )
        held = self._update_held(
            task,
            worker_id,
            session,
            last_error=error,
            claimed_by=None,
            claim_token=None,
            lease_expires_at=None,
            **values,
        )
        return outcome if held else FailOutcome.NOT_HELD

    def release(self, task: ClaimedTask, worker_id: str, *, session: Session | None = None) -> bool:
        """Give a held task back unfinished, claimable at once (its worker is stopping);
        the attempt is not counted against it."""
        return self._update_held(
            task,
            worker_id,
            session,
            state=TaskState.QUEUED,
            available_at=self._clock(),
            attempts=QueuedTask.attempts - 1,
            claimed_by=None,
            claim_token=None,
            lease_expires_at=None,
        )

    def next_available_at(self, task_types: Iterable[str]) -> datetime | None:
        """When the earliest queued task of these types becomes claimable."""
        statement = select(func.min(QueuedTask.available_at)).where(
            QueuedTask.state == TaskState.QUEUED, QueuedTask.task_type.in_(list(task_types))
        )
        with read_session(self._sessions) as session:
            return session.scalar(statement)

    def reclaim_expired(self) -> int:
        """Requeue tasks whose lease ran out (their worker died); a task that has used
        all its attempts goes dead instead. Returns how many tasks changed."""
        now = self._clock()
        exhausted = QueuedTask.attempts >= QueuedTask.max_attempts
        statement = (
            update(QueuedTask)
            .where(QueuedTask.state == TaskState.CLAIMED, QueuedTask.lease_expires_at < now)
            .values(
                state=case((exhausted, TaskState.DEAD.value), else_=TaskState.QUEUED.value),
                finished_at=case((exhausted, literal(now, _finished_at_type)), else_=None),
                available_at=now,
                last_error=func.coalesce("lease of " + QueuedTask.claimed_by, "lease") + " expired",
                claimed_by=None,
                claim_token=None,
                lease_expires_at=None,
            )
        )
        with self._sessions.begin() as session:
            reclaimed = execute_counting(session, statement)
        if reclaimed:
            logger.warning("reclaimed %d task(s) whose lease expired", reclaimed)
        return reclaimed

    def abandon(self, session: Session, task_type: str, task_ids: list[str], reason: str) -> int:
        """Give up on unfinished tasks (their work was cancelled or timed out elsewhere),
        inside the caller's transaction. A worker still holding one is fenced out."""
        if not task_ids:
            return 0
        statement = (
            update(QueuedTask)
            .where(
                QueuedTask.task_type == task_type,
                QueuedTask.task_id.in_(task_ids),
                QueuedTask.state.in_([TaskState.QUEUED, TaskState.CLAIMED]),
            )
            .values(
                state=TaskState.DEAD,
                finished_at=self._clock(),
                last_error=reason,
                claimed_by=None,
                claim_token=None,
                lease_expires_at=None,
            )
        )
        return execute_counting(session, statement)

    def depth(self, session: Session | None = None) -> dict[tuple[str, TaskState], int]:
        """Unfinished tasks by (task_type, state), for metrics. Done and dead tasks are
        history and are not counted: the partial indexes keep this cheap however much
        history there is."""
        statement = (
            select(QueuedTask.task_type, QueuedTask.state, func.count())
            .where(QueuedTask.state.in_([TaskState.QUEUED, TaskState.CLAIMED]))
            .group_by(QueuedTask.task_type, QueuedTask.state)
        )
        with contextlib.ExitStack() as stack:
            reader = session or stack.enter_context(read_session(self._sessions))
            return {
                (task_type, state): count for task_type, state, count in reader.execute(statement)
            }

    def _update_held(
        self, task: ClaimedTask, worker_id: str, session: Session | None, **values: Any
    ) -> bool:
        statement = (
            update(QueuedTask)
            .where(
                QueuedTask.id == task.id,
                QueuedTask.state == TaskState.CLAIMED,
                QueuedTask.claimed_by == worker_id,
                QueuedTask.claim_token == task.claim_token,
            )
            .values(**values)
        )
        with transaction_scope(self._sessions, session) as tx:
            held = execute_counting(tx, statement) == 1
        if not held:
            logger.warning(
                "task %s (%s %s) is no longer held by %s",
                task.id,
                task.task_type,
                task.task_id,
                worker_id,
            )
        return held

    @staticmethod
    def _notify(session: Session, task_type: str) -> None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_notify(NOTIFY_CHANNEL, task_type)))


class QueueListener:
    """Wakes workers the moment a task is enqueued on PostgreSQL: a thread that LISTENs
    on NOTIFY_CHANNEL over its own connection and calls `on_notify` for each
    notification. It reconnects after a connection loss; workers still poll meanwhile,
    so a lost notification only costs latency."""

    RECONNECT_DELAY_S = 1.0
    CHECK_INTERVAL_S = 0.5

    def __init__(self, database_url: str, on_notify: Callable[[], None]) -> None:
        self._conninfo = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._on_notify = on_notify
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-queue-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        """True once the LISTEN is in place (tests use it to avoid a race)."""
        return self._listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                self._listening.clear()
                logger.warning("queue listener lost its connection (%s); reconnecting", exc)
                self._stopping.wait(self.RECONNECT_DELAY_S)

    def _listen(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._listening.set()
            while not self._stopping.is_set():
                for _ in conn.notifies(timeout=self.CHECK_INTERVAL_S):
                    self._on_notify()
