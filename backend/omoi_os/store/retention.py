"""The SQL of retention: deleting history older than a cutoff, in bounded batches.

Three kinds of history, each read oldest first through its retention index:

- task_queue: done and dead tasks, by finished_at (`ix_task_queue_finished_at`). The
  task queue owns its table's SQL (services/task_queue.py); deleting its finished rows
  is the one exception, kept here with the rest of retention. Queued and claimed
  tasks are never touched.
- consolidation_jobs: finished jobs (completed, failed, timed out, cancelled), by
  finished_at (`ix_consolidation_jobs_finished_at`), except each project's most
  recent finished job: a project keeps its last outcome, and the job its cooldown was
  measured from. Pending and running jobs are never touched.
- consolidation_ticks: tick records, by their instant (the primary key), except the
  newest one, which the tick catch-up consults.

Memories are never touched: their job id is a plain number, not a foreign key.

A batch picks at most `limit` rows and deletes them in one statement. On PostgreSQL
the pick is `FOR UPDATE SKIP LOCKED`, so replicas purging at the same time each take
other rows and never wait for, or fail on, one another; SQLite has one writer at a
time, and the clause is left out there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from omoi_os.models import ConsolidationJob, ConsolidationTick, JobStatus, QueuedTask, TaskState
from omoi_os.models.base import cast_table
from omoi_os.models.task_queue import in_state

TASKS = "task_queue"
JOBS = "consolidation_jobs"
TICKS = "consolidation_ticks"
HISTORY_TABLES = (TASKS, JOBS, TICKS)

FINISHED_JOB_STATUSES = (
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.TIMED_OUT,
    JobStatus.CANCELLED,
)

_tasks = cast_table(QueuedTask)
_jobs = cast_table(ConsolidationJob)
_ticks = cast_table(ConsolidationTick)
# Other rows of the same tables, for "a newer one exists" (aliases: not correlated).
_newer_jobs = _jobs.alias("newer")
_newest_tick = _ticks.alias("newest")

Conditions = list[ColumnElement[bool]]


def _finished_tasks(before: datetime) -> Conditions:
    # in_state spells the states inline, as the partial retention index does.
    return [in_state(TaskState.DONE, TaskState.DEAD), _tasks.c.finished_at < before]


def _superseded_jobs(before: datetime) -> Conditions:
    statuses: list[ColumnElement[str]] = [
        literal_column(f"'{status.value}'") for status in FINISHED_JOB_STATUSES
    ]
    newer, job = _newer_jobs.c, _jobs.c
    # A later finished job of the same project (the finished_at index per project
    # answers it): the project's most recent finished job never has one.
    finished_later = exists().where(
        newer.project_id == job.project_id,
        newer.finished_at.is_not(None),
        or_(
            newer.finished_at > job.finished_at,
            and_(newer.finished_at == job.finished_at, newer.id > job.id),
        ),
    )
    return [
        job.finished_at.is_not(None),  # the partial index's own predicate
        job.finished_at < before,
        job.status.in_(statuses),
        finished_later,
    ]


def _superseded_ticks(before: datetime) -> Conditions:
    newest = select(func.max(_newest_tick.c.scheduled_for)).scalar_subquery()
    return [_ticks.c.scheduled_for < before, _ticks.c.scheduled_for < newest]


@dataclass(frozen=True)
class History:
    """One table's history: what a batch picks rows by, the age it reads them in
    (oldest first, through the retention index), and which rows are expired."""

    table: Table
    key: Column[int] | Column[datetime]
    age: Column[datetime]
    expired: Callable[[datetime], Conditions]


_HISTORY = {
    TASKS: History(_tasks, _tasks.c.id, _tasks.c.finished_at, _finished_tasks),
    JOBS: History(_jobs, _jobs.c.id, _jobs.c.finished_at, _superseded_jobs),
    TICKS: History(_ticks, _ticks.c.scheduled_for, _ticks.c.scheduled_for, _superseded_ticks),
}


@dataclass(frozen=True)
class Batch:
    """What one batch deleted, and where the next one resumes reading."""

    deleted: int
    resume_from: datetime | None


def pick_batch(
    table: str, *, before: datetime, limit: int, resume_from: datetime | None = None
) -> tuple[History, Select[Any]]:
    """At most `limit` expired rows of `table` older than `before`, oldest first (their
    keys), for the database's engine to lock and delete (DatabaseEngine.delete_picked).

    `resume_from` (the previous batch's) starts reading at the age where that batch
    stopped, so the rows retention keeps (each project's latest job) are read once per
    run rather than once per batch."""
    history = _HISTORY[table]
    conditions = history.expired(before)
    if resume_from is not None:
        conditions.append(history.age >= resume_from)
    return history, select(history.key).where(*conditions).order_by(history.age).limit(limit)


def count_expired(session: Session, table: str, *, before: datetime) -> int:
    """How many rows of `table` delete_batch would delete, taken all together."""
    history = _HISTORY[table]
    statement = select(func.count()).select_from(history.table).where(*history.expired(before))
    return session.scalar(statement) or 0
