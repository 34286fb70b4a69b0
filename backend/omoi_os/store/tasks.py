"""The SQL of `task_queue`: one statement per queue operation, built once.

Every write after a claim is fenced by the claim's own token (`fenced`): a worker
whose lease was taken over changes nothing any more (invariant 6,
docs/invariants.md). The fenced statements take the parameters `fence` gives.

Inserting tasks differs between the databases (a batch passed as arrays on
PostgreSQL): the engines build that statement from `QUEUE_COLUMNS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    case,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from omoi_os.models import QueuedTask, TaskState
from omoi_os.models.base import cast_table
from omoi_os.models.task_queue import in_state
from omoi_os.store.sql import execute_counting, insert_ignoring_conflicts

TASKS = cast_table(QueuedTask)
# Bound with the column's own type (UTC handling), also where SQL builds the value.
_finished_at_type = TASKS.c.finished_at.type

# The columns a new task is inserted with, in this order.
QUEUE_COLUMNS = (
    "task_type",
    "task_id",
    "payload",
    "state",
    "attempts",
    "max_attempts",
    "available_at",
    "created_at",
)


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


def fenced(statement: Update) -> Update:
    """`statement` only for the task (held_id) while held_by still holds it under the
    claim's token (held_token): what fences a worker that lost its lease."""
    return statement.where(
        TASKS.c.id == bindparam("held_id"),
        in_state(TaskState.CLAIMED),
        TASKS.c.claimed_by == bindparam("held_by"),
        TASKS.c.claim_token == bindparam("held_token"),
    )


def fence(task: ClaimedTask, worker_id: str) -> dict[str, Any]:
    """The parameters of a fenced statement: this claim of `task`, by `worker_id`."""
    return {"held_id": task.id, "held_by": worker_id, "held_token": task.claim_token}


# --- the worker's statements of every task -----------------------------------------------

EXTEND = fenced(update(TASKS)).values(lease_expires_at=bindparam("lease_expires_at"))
COMPLETE = fenced(update(TASKS)).values(
    state=TaskState.DONE, finished_at=bindparam("finished_at"), lease_expires_at=None
)
_DUE = (
    select(TASKS.c.id)
    .where(
        in_state(TaskState.QUEUED),
        TASKS.c.task_type.in_(bindparam("task_types", expanding=True)),
        TASKS.c.available_at <= bindparam("now"),
    )
    .order_by(TASKS.c.available_at, TASKS.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
    .cte("due")
)
# RETURNING what ClaimedTask holds, in its order.
CLAIM_COLUMNS = (
    TASKS.c.id,
    TASKS.c.task_type,
    TASKS.c.task_id,
    TASKS.c.attempts,
    TASKS.c.max_attempts,
    TASKS.c.lease_expires_at,
    TASKS.c.claim_token,
)
CLAIM = (
    update(TASKS)
    .where(TASKS.c.id == _DUE.c.id)
    .values(
        state=TaskState.CLAIMED,
        claimed_by=bindparam("worker_id"),
        claim_token=bindparam("claim_token"),
        lease_expires_at=bindparam("lease_expires_at"),
        attempts=TASKS.c.attempts + 1,
    )
    .returning(*CLAIM_COLUMNS)
)
_RETRY_LATER = fenced(update(TASKS)).values(
    state=TaskState.QUEUED,
    available_at=bindparam("retry_at"),
    last_error=bindparam("error"),
    claimed_by=None,
    claim_token=None,
    lease_expires_at=None,
)
_GIVE_UP = fenced(update(TASKS)).values(
    state=TaskState.DEAD,
    finished_at=bindparam("finished_at"),
    last_error=bindparam("error"),
    claimed_by=None,
    claim_token=None,
    lease_expires_at=None,
)
# Handed back unfinished: claimable at once, the attempt not counted against it.
_RELEASE = fenced(update(TASKS)).values(
    state=TaskState.QUEUED,
    available_at=bindparam("available_at"),
    attempts=TASKS.c.attempts - 1,
    claimed_by=None,
    claim_token=None,
    lease_expires_at=None,
)


def claim(session: Session, parameters: dict[str, Any]) -> list[ClaimedTask]:
    """Lease due tasks (CLAIM's parameters); by id."""
    rows = session.connection().execute(CLAIM, parameters)
    return sorted((ClaimedTask(*row) for row in rows), key=lambda task: task.id)


def _held(session: Session, statement: Update, parameters: dict[str, Any]) -> bool:
    return execute_counting(session, statement, parameters) == 1


def extend(session: Session, fenced_by: dict[str, Any], *, expires_at: datetime) -> bool:
    """Push a held task's lease to `expires_at`; False if it is not held."""
    return _held(session, EXTEND, fenced_by | {"lease_expires_at": expires_at})


def complete(session: Session, fenced_by: dict[str, Any], *, now: datetime) -> bool:
    """Mark a held task done; False if it is not held."""
    return _held(session, COMPLETE, fenced_by | {"finished_at": now})


def retry_later(
    session: Session, fenced_by: dict[str, Any], *, error: str, retry_at: datetime
) -> bool:
    """Queue a held task again from `retry_at`, recording `error`; False if not held."""
    return _held(session, _RETRY_LATER, fenced_by | {"error": error, "retry_at": retry_at})


def give_up(session: Session, fenced_by: dict[str, Any], *, error: str, now: datetime) -> bool:
    """A held task's last attempt failed: it is dead; False if not held."""
    return _held(session, _GIVE_UP, fenced_by | {"error": error, "finished_at": now})


def release(session: Session, fenced_by: dict[str, Any], *, now: datetime) -> bool:
    """Hand a held task back unfinished; False if not held."""
    return _held(session, _RELEASE, fenced_by | {"available_at": now})


# --- inserting ----------------------------------------------------------------------------


def insert_selected(
    session: Session, *, task_type: str, task_ids: Select[Any], max_attempts: int, now: datetime
) -> int:
    """A task, claimable at `now`, for each task id `task_ids` yields (one text column)
    unless it is queued already; set-based, so the ids never come to Python."""
    ids = task_ids.subquery()
    rows = select(
        literal(task_type),
        ids.c[0],
        literal({}, TASKS.c.payload.type),
        literal(TaskState.QUEUED.value),
        literal(0),
        literal(max_attempts),
        literal(now, TASKS.c.available_at.type),
        literal(now, TASKS.c.created_at.type),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT
    statement = insert_ignoring_conflicts(QueuedTask).from_select(list(QUEUE_COLUMNS), rows)
    return execute_counting(session, statement)


# --- taking tasks away from their workers -----------------------------------------------


def reclaim_expired(session: Session, *, now: datetime) -> int:
    """Requeue tasks whose lease ran out (their worker died); a task that has used all
    its attempts goes dead instead. Returns how many tasks changed."""
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
    return execute_counting(session, statement)


def abandon(
    session: Session, *, task_type: str, task_ids: list[str], reason: str, now: datetime
) -> int:
    """Give up on unfinished tasks; a worker still holding one is fenced out."""
    statement = (
        update(QueuedTask)
        .where(
            QueuedTask.task_type == task_type,
            QueuedTask.task_id.in_(task_ids),
            QueuedTask.state.in_([TaskState.QUEUED, TaskState.CLAIMED]),
        )
        .values(
            state=TaskState.DEAD,
            finished_at=now,
            last_error=reason,
            claimed_by=None,
            claim_token=None,
            lease_expires_at=None,
        )
    )
    return execute_counting(session, statement)


def drop_queued(
    session: Session, *, task_type: str, task_ids: list[str], reason: str, now: datetime
) -> int:
    """Finish queued tasks unrun; a claimed task is left to its worker."""
    statement = (
        update(QueuedTask)
        .where(
            QueuedTask.task_type == task_type,
            QueuedTask.task_id.in_(task_ids),
            in_state(TaskState.QUEUED),
        )
        .values(state=TaskState.DONE, finished_at=now, last_error=reason)
    )
    return execute_counting(session, statement)


# --- reading ------------------------------------------------------------------------------


def next_available_at(session: Session, *, task_types: list[str]) -> datetime | None:
    """When the earliest queued task of these types becomes claimable."""
    statement = select(func.min(QueuedTask.available_at)).where(
        in_state(TaskState.QUEUED), QueuedTask.task_type.in_(task_types)
    )
    return session.scalar(statement)


def dead_task(task_type: str, task_id: ColumnElement[str]) -> Select[str | None]:
    """SQL: the last error of the task `task_id` (a column of the caller's query) of
    `task_type`, if that task is dead; no row otherwise."""
    return select(QueuedTask.last_error).where(
        QueuedTask.task_type == task_type,
        QueuedTask.task_id == task_id,
        QueuedTask.state == TaskState.DEAD,
    )


def depth(session: Session) -> dict[tuple[str, TaskState], int]:
    """Unfinished tasks by (task_type, state): the partial indexes keep this cheap
    however much history there is."""
    statement = (
        select(QueuedTask.task_type, QueuedTask.state, func.count())
        .where(in_state(TaskState.QUEUED, TaskState.CLAIMED))
        .group_by(QueuedTask.task_type, QueuedTask.state)
    )
    return {(task_type, state): count for task_type, state, count in session.execute(statement)}


def oldest_claimable_at(session: Session, *, task_type: str, now: datetime) -> datetime | None:
    """When the longest-waiting task of `task_type` claimable at `now` became claimable:
    the first entry of the claim index in its order, whatever the queue's depth."""
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
