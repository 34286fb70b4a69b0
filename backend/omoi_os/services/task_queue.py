"""TaskQueueService: a durable queue in the backend's own database.

Life of a task: `enqueue` (idempotent on task_type + task_id) → `claim` (a lease for
one worker) → `complete`, or `fail` (retried with exponential backoff, dead after
max_attempts), or `release` (handed back unfinished). A worker that dies leaves its
lease to expire; `reclaim_expired` puts the task back.

Every method works inside the caller's transaction, passed as `session=`: the
caller decides what commits together (a job row and its task; a claim and the job
it starts). Each operation is one SQL statement. Claiming uses `FOR UPDATE SKIP
LOCKED` on PostgreSQL, so concurrent workers never take the same task; on SQLite the
statement runs under the database's single write lock, which is just as atomic.
Every write after a claim is fenced by the claim's own token: a worker whose lease
was taken over cannot complete, fail or release the task any more (invariant 6,
docs/invariants.md).

On PostgreSQL, enqueueing NOTIFYs `NOTIFY_CHANNEL` (delivered at commit), so a
listening worker wakes at once (`QueueListener`); on SQLite workers poll.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    case,
    func,
    literal,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from omoi_os.clock import Clock, utc_now
from omoi_os.models import QueuedTask, TaskState
from omoi_os.models.base import UTCDateTime, cast_table
from omoi_os.models.task_queue import in_state
from omoi_os.store.sql import execute_counting, insert_ignoring_conflicts

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "omoi_task_queue"
DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_MAX_ATTEMPTS = 5

_tasks = cast_table(QueuedTask)
# Bound with the column's own type (UTC handling), also where SQL builds the value.
_finished_at_type = _tasks.c.finished_at.type

# PostgreSQL: any number of tasks in one statement, passed as two arrays.
_ENQUEUE_POSTGRES = text(
    "INSERT INTO task_queue (task_type, task_id, payload, state, attempts, max_attempts, "
    "available_at, created_at) "
    "SELECT :task_type, t.task_id, '{}', 'queued', 0, :max_attempts, t.available_at, :now "
    "FROM unnest(CAST(:task_ids AS varchar[]), CAST(:available_at AS timestamptz[])) "
    "AS t(task_id, available_at) "
    "ON CONFLICT (task_type, task_id) DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))

# Elsewhere (SQLite, in process): one statement executed for each task.
_ENQUEUE_ONE = (
    sqlite.insert(_tasks)
    .values(
        task_type=bindparam("task_type"),
        task_id=bindparam("task_id"),
        payload={},
        state=TaskState.QUEUED,
        attempts=0,
        max_attempts=bindparam("max_attempts"),
        available_at=bindparam("available_at"),
        created_at=bindparam("now"),
    )
    .on_conflict_do_nothing()
)


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
    attempts: int  # this claim included
    max_attempts: int
    lease_expires_at: datetime
    claim_token: str


class FailOutcome(StrEnum):
    RETRY = "retry"  # queued again after the backoff
    DEAD = "dead"  # that was the last attempt
    NOT_HELD = "not_held"  # the lease was lost; someone else owns the task now


def _fenced(statement: Update) -> Update:
    """`statement` only for the task (held_id) while held_by still holds it under the
    claim's token (held_token): what fences a worker that lost its lease."""
    return statement.where(
        _tasks.c.id == bindparam("held_id"),
        in_state(TaskState.CLAIMED),
        _tasks.c.claimed_by == bindparam("held_by"),
        _tasks.c.claim_token == bindparam("held_token"),
    )


# The worker's statements of every job, built once (not on every call). CLAIM and
# COMPLETE are public: the worker runs them as parts of statements that also move the
# job (services/consolidation/job_tasks.py).
_EXTEND = _fenced(update(_tasks)).values(lease_expires_at=bindparam("lease_expires_at"))
COMPLETE = _fenced(update(_tasks)).values(
    state=TaskState.DONE, finished_at=bindparam("finished_at"), lease_expires_at=None
)
_DUE = (
    select(_tasks.c.id)
    .where(
        in_state(TaskState.QUEUED),
        _tasks.c.task_type.in_(bindparam("task_types", expanding=True)),
        _tasks.c.available_at <= bindparam("now"),
    )
    .order_by(_tasks.c.available_at, _tasks.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
    .cte("due")
)
CLAIM = (
    update(_tasks)
    .where(_tasks.c.id == _DUE.c.id)
    .values(
        state=TaskState.CLAIMED,
        claimed_by=bindparam("worker_id"),
        claim_token=bindparam("claim_token"),
        lease_expires_at=bindparam("lease_expires_at"),
        attempts=_tasks.c.attempts + 1,
    )
    .returning(
        _tasks.c.id,
        _tasks.c.task_type,
        _tasks.c.task_id,
        _tasks.c.attempts,
        _tasks.c.max_attempts,
        _tasks.c.lease_expires_at,
        _tasks.c.claim_token,
    )
)


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

    def enqueue(
        self, *, session: Session, task_type: str, tasks: Sequence[tuple[str, datetime | None]]
    ) -> int:
        """Queue each (task_id, available_at) of `tasks` (available_at None: now) unless
        that task_id is already queued. Returns how many were queued now."""
        if not tasks:
            return 0
        now = self._clock()
        ids = [task_id for task_id, _ in tasks]
        available = [at or now for _, at in tasks]
        common = {"task_type": task_type, "max_attempts": self.max_attempts, "now": now}
        if session.get_bind().dialect.name == "postgresql":
            parameters = common | {"task_ids": ids, "available_at": available}
            queued = execute_counting(session, _ENQUEUE_POSTGRES, parameters)
        else:
            queued = sum(
                execute_counting(session, _ENQUEUE_ONE, common | {"task_id": i, "available_at": at})
                for i, at in zip(ids, available, strict=True)
            )
        if queued:
            self._notify(session, task_type)
        return queued

    def enqueue_select(self, *, session: Session, task_type: str, task_ids: Select[Any]) -> int:
        """Queue a task, claimable now, for each task id `task_ids` yields (one text
        column) unless it is already queued; set-based, so the ids never come to Python.
        Returns how many were queued."""
        now = self._clock()
        ids = task_ids.subquery()
        rows = select(
            literal(task_type),
            ids.c[0],
            literal({}, _tasks.c.payload.type),
            literal(TaskState.QUEUED.value),
            literal(0),
            literal(self.max_attempts),
            literal(now, _tasks.c.available_at.type),
            literal(now, _tasks.c.created_at.type),
        ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT
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
        *,
        session: Session,
        task_types: Iterable[str],
        worker_id: str,
        limit: int = 1,
        lease: timedelta | None = None,
    ) -> list[ClaimedTask]:
        """Lease up to `limit` due tasks of `task_types` to `worker_id`, oldest first."""
        parameters = self.claim_parameters(task_types, worker_id, limit=limit, lease=lease)
        rows = session.connection().execute(CLAIM, parameters)
        claimed = [ClaimedTask(*row) for row in rows]
        return sorted(claimed, key=lambda task: task.id)

    def claim_parameters(
        self,
        task_types: Iterable[str],
        worker_id: str,
        *,
        limit: int = 1,
        lease: timedelta | None = None,
    ) -> dict[str, Any]:
        """CLAIM's parameters: a new claim token, and a lease from now (`now`)."""
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
        """COMPLETE's parameters for a task this worker holds."""
        return _fence(task, worker_id) | {"finished_at": self._clock()}

    def extend_lease(
        self, *, session: Session, task: ClaimedTask, worker_id: str, lease: timedelta | None = None
    ) -> bool:
        """Push the lease of a task this worker still holds; False if it lost it."""
        expires = self._clock() + (lease or self.lease)
        return self._update_held(session, task, worker_id, _EXTEND, lease_expires_at=expires)

    def complete(self, *, session: Session, task: ClaimedTask, worker_id: str) -> bool:
        """Mark a held task done; False if the lease was lost (the task is not ours)."""
        return self._update_held(session, task, worker_id, COMPLETE, finished_at=self._clock())

    def fail(
        self, *, session: Session, task: ClaimedTask, worker_id: str, error: str
    ) -> FailOutcome:
        """Record a failed attempt: queue it again after the backoff, or let it die."""
        now = self._clock()
        values: dict[str, Any]
        if task.attempts >= task.max_attempts:
            outcome, values = FailOutcome.DEAD, {"state": TaskState.DEAD, "finished_at": now}
        else:
            retry_at = now + self.retry.delay(task.attempts)
            outcome, values = (
                FailOutcome.RETRY,
                {"state": TaskState.QUEUED, "available_at": retry_at},
            )
        statement = _fenced(update(_tasks)).values(
            last_error=error,
            claimed_by=None,
            claim_token=None,
            lease_expires_at=None,
            **values,
        )
        held = self._update_held(session, task, worker_id, statement)
        return outcome if held else FailOutcome.NOT_HELD

    def release(self, *, session: Session, task: ClaimedTask, worker_id: str) -> bool:
        """Give a held task back unfinished, claimable at once (its worker is stopping);
        the attempt is not counted against it."""
        statement = _fenced(update(_tasks)).values(
            state=TaskState.QUEUED,
            available_at=self._clock(),
            attempts=_tasks.c.attempts - 1,
            claimed_by=None,
            claim_token=None,
            lease_expires_at=None,
        )
        return self._update_held(session, task, worker_id, statement)

    def next_available_at(self, *, session: Session, task_types: Iterable[str]) -> datetime | None:
        """When the earliest queued task of these types becomes claimable."""
        statement = select(func.min(QueuedTask.available_at)).where(
            in_state(TaskState.QUEUED), QueuedTask.task_type.in_(list(task_types))
        )
        return session.scalar(statement)

    def reclaim_expired(self, *, session: Session) -> int:
        """Requeue tasks whose lease ran out (their worker died); a task that has used
        all its attempts goes dead instead. Returns how many tasks changed."""
        now = self._clock()
        exhausted = QueuedTask.attempts >= QueuedTask.max_attempts
        # A task whose row is locked is being written by its worker right now (a batch
        # holds its lease to the commit): alive, whatever the clock says. Skip it.
        expired = (
            select(QueuedTask.id)
            .where(in_state(TaskState.CLAIMED), QueuedTask.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(QueuedTask)
            .where(QueuedTask.id.in_(expired.scalar_subquery()))
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
        reclaimed = execute_counting(session, statement)
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

    def drop_queued(
        self, *, session: Session, task_type: str, task_ids: list[str], reason: str
    ) -> int:
        """Finish queued tasks unrun (their work was cancelled): no worker will claim
        them. A claimed task is left to its worker. Returns how many were dropped."""
        statement = (
            update(QueuedTask)
            .where(
                QueuedTask.task_type == task_type,
                QueuedTask.task_id.in_(task_ids),
                in_state(TaskState.QUEUED),
            )
            .values(state=TaskState.DONE, finished_at=self._clock(), last_error=reason)
        )
        return execute_counting(session, statement)

    @staticmethod
    def dead_task(task_type: str, task_id: ColumnElement[str]) -> Select[str | None]:
        """SQL: the last error of the task `task_id` (a column of the caller's query) of
        `task_type`, if that task is dead; no row otherwise."""
        return select(QueuedTask.last_error).where(
            QueuedTask.task_type == task_type,
            QueuedTask.task_id == task_id,
            QueuedTask.state == TaskState.DEAD,
        )

    @staticmethod
    def depth(*, session: Session) -> dict[tuple[str, TaskState], int]:
        """Unfinished tasks by (task_type, state), for metrics. Done and dead tasks are
        history and are not counted: the partial indexes keep this cheap however much
        history there is."""
        statement = (
            select(QueuedTask.task_type, QueuedTask.state, func.count())
            .where(in_state(TaskState.QUEUED, TaskState.CLAIMED))
            .group_by(QueuedTask.task_type, QueuedTask.state)
        )
        return {(task_type, state): count for task_type, state, count in session.execute(statement)}

    @staticmethod
    def oldest_claimable_at(*, session: Session, task_type: str, now: datetime) -> datetime | None:
        """When the longest-waiting task of `task_type` that is claimable at `now` became
        claimable (None if none is). The first entry of the claim index in its order, so
        it costs the same however deep the queue is."""
        statement = (
            select(QueuedTask.available_at)
            .where(
                in_state(TaskState.QUEUED),
                QueuedTask.task_type == task_type,
                QueuedTask.available_at <= now,
            )
            .order_by(QueuedTask.available_at)
            .limit(1)
        )
        return session.scalar(statement)

    def _update_held(
        self,
        session: Session,
        task: ClaimedTask,
        worker_id: str,
        statement: Update,
        **values: Any,
    ) -> bool:
        """Run a _fenced `statement` on `task`, with its other `values`; True if this
        worker still held the task (so the row changed)."""
        held = execute_counting(session, statement, _fence(task, worker_id) | values) == 1
        if not held:
            self.report_not_held(task, worker_id)
        return held

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

    @staticmethod
    def _notify(session: Session, task_type: str) -> None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_notify(NOTIFY_CHANNEL, task_type)))


def _fence(task: ClaimedTask, worker_id: str) -> dict[str, Any]:
    """The parameters of _fenced: this claim of `task`, by `worker_id`."""
    return {"held_id": task.id, "held_by": worker_id, "held_token": task.claim_token}


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
