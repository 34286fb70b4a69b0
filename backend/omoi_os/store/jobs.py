"""The SQL of `consolidation_jobs` (a tick's record is store/ticks.py's).

Every function works inside the caller's session and transaction. Uniqueness is left
to the database's indexes (`INSERT … ON CONFLICT DO NOTHING`), never to a
count-then-insert. This module also owns how a job is named on the task queue
(`task_id_for_job` / `job_id_for_task`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    String,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from omoi_os.errors import JobNotFound
from omoi_os.models import (
    ACTIVE_JOB_STATUSES,
    ConsolidationJob,
    JobStatus,
    Project,
    TriggerType,
    is_active_job,
)
from omoi_os.models.base import cast_table
from omoi_os.store.sql import execute_counting, insert_ignoring_conflicts

_jobs = cast_table(ConsolidationJob)

# --- a job on the task queue -----------------------------------------------------------

# Who a job's trigger or cancellation is recorded as when no one is named.
SYSTEM_PRINCIPAL = "system"

# The queue's task_type for consolidation jobs; a job's task_id is its id as text.
CONSOLIDATION_TASK = "consolidation"


def task_id_for_job(job_id: int) -> str:
    return str(job_id)


def job_id_for_task(task_id: str) -> int:
    return int(task_id)


def job_task_id_sql() -> ColumnElement[str]:
    """task_id_for_job in SQL, for a job row (joins a job to its queue task)."""
    return cast(ConsolidationJob.id, String)


# --- writing jobs ----------------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    """A job row an INSERT created: what its queue task needs."""

    id: int
    project_id: uuid.UUID


_JOB_COLUMNS = (
    "project_id",
    "trigger_type",
    "scope",
    "status",
    "triggered_by",
    "scheduled_for",
    "created_at",
    "claimable_at",
    "project_paused",
)


def job_rows(
    project_ids: Select[Any],
    *,
    trigger_type: TriggerType,
    scope: dict[str, Any],
    triggered_by: str,
    scheduled_for: datetime | None,
    now: datetime,
    claimable_at: datetime,
    project_paused: bool = False,
) -> Select[Any]:
    """A pending job row (in _JOB_COLUMNS order) for each project `project_ids` yields."""
    ids = project_ids.subquery()
    return select(
        ids.c[0],
        literal(trigger_type.value),
        literal(scope, _jobs.c.scope.type),
        literal(JobStatus.PENDING.value),
        literal(triggered_by),
        literal(scheduled_for, _jobs.c.scheduled_for.type),
        literal(now, _jobs.c.created_at.type),
        literal(claimable_at, _jobs.c.claimable_at.type),
        literal(project_paused),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT


def insert_jobs(session: Session, rows: Select[Any]) -> list[NewJob]:
    """Insert the job `rows` (from job_rows) in one statement; a row that would give its
    project a second active job, or a second job for one tick, is skipped by the
    database. Returns the jobs created, in project-id order.

    Rows go in project-id order so that concurrent writers lock them in the same
    order (no deadlock); one that loses a race waits for the winner's commit, then
    skips the rows the winner wrote."""
    ordered = rows.order_by(rows.selected_columns[0])
    statement = (
        insert_ignoring_conflicts(ConsolidationJob)
        .from_select(list(_JOB_COLUMNS), ordered)
        .returning(_jobs.c.id, _jobs.c.project_id)
    )
    return [NewJob(job_id, project_id) for job_id, project_id in session.execute(statement)]


_SET_CLAIMABLE_AT = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"))
    .values(claimable_at=bindparam("claimable_at"))
)


def set_claimable_at(session: Session, claimable_at: dict[int, datetime]) -> None:
    """Give each job (by id) its own claimable_at (a spread tick's offsets)."""
    if claimable_at:
        rows = [{"job_id": job_id, "claimable_at": at} for job_id, at in claimable_at.items()]
        session.connection().execute(_SET_CLAIMABLE_AT, rows)


def count_projects_with_active_job(session: Session) -> int:
    """Active projects, not paused, that have a pending or running job (the
    one-per-project index)."""
    statement = (
        select(func.count())
        .select_from(ConsolidationJob)
        .join(Project, Project.id == ConsolidationJob.project_id)
        .where(is_active_job(), Project.is_active, Project.paused_at.is_(None))
    )
    return session.scalar(statement) or 0


def insert_jobs_counting(session: Session, rows: Select[Any]) -> int:
    """insert_jobs without returning the jobs: how many the database admitted."""
    ordered = rows.order_by(rows.selected_columns[0])
    statement = insert_ignoring_conflicts(ConsolidationJob).from_select(list(_JOB_COLUMNS), ordered)
    return execute_counting(session, statement)


def task_ids_of_tick(tick: datetime) -> Select[Any]:
    """The queue task ids of every job of `tick` (one text column)."""
    return select(job_task_id_sql()).where(ConsolidationJob.scheduled_for == tick)


def has_active_job(project_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """SQL: the project has a pending or running job."""
    return exists().where(ConsolidationJob.project_id == project_id, is_active_job())


# --- reading jobs ----------------------------------------------------------------------


def active_job_id(session: Session, project_id: uuid.UUID) -> int | None:
    """The project's pending or running job, if any."""
    job_id: int | None = session.scalar(select(active_job_id_sql(literal(project_id))))
    return job_id


def active_job_id_sql(project_id: ColumnElement[Any]) -> ScalarSelect[int]:
    return (
        select(ConsolidationJob.id)
        .where(ConsolidationJob.project_id == project_id, is_active_job())
        .scalar_subquery()
    )


def get_job(session: Session, job_id: int) -> ConsolidationJob:
    job = session.get(ConsolidationJob, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def list_jobs(
    session: Session,
    project_id: uuid.UUID | None,
    *,
    status: JobStatus | None = None,
    trigger_type: TriggerType | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[ConsolidationJob]:
    """Jobs, newest first: of one project, or of all when project_id is None (by
    status, ix_consolidation_jobs_status_id serves it)."""
    statement = (
        select(ConsolidationJob).order_by(ConsolidationJob.id.desc()).limit(limit).offset(offset)
    )
    if project_id is not None:
        statement = statement.where(ConsolidationJob.project_id == project_id)
    if status is not None:
        statement = statement.where(ConsolidationJob.status == status)
    if trigger_type is not None:
        statement = statement.where(ConsolidationJob.trigger_type == trigger_type)
    return list(session.scalars(statement))


def count_active_jobs(session: Session) -> dict[JobStatus, int]:
    """Pending and running jobs, by status (the partial unique index serves it)."""
    statement = (
        select(ConsolidationJob.status, func.count())
        .where(is_active_job())
        .group_by(ConsolidationJob.status)
    )
    counts: dict[JobStatus, int] = {status: count for status, count in session.execute(statement)}
    return {status: counts.get(status, 0) for status in ACTIVE_JOB_STATUSES}


# --- the worker's transitions ----------------------------------------------------------


@dataclass(frozen=True)
class StartedJob:
    """What a worker needs of a job it has just marked running."""

    id: int
    project_id: uuid.UUID
    scope: dict[str, Any]
    result: dict[str, Any] | None
    cancel_requested_at: datetime | None  # asked to stop before this worker took it


def start_statement(job_id: ColumnElement[Any]) -> Update:
    """SQL: job `job_id` (a parameter, or a column of the caller's statement) →
    running, if it is still active; RETURNING what StartedJob holds."""
    return (
        update(_jobs)
        .where(_jobs.c.id == job_id, is_active_job())
        .values(status=JobStatus.RUNNING, started_at=bindparam("now"), error=None)
        .returning(
            _jobs.c.id,
            _jobs.c.project_id,
            _jobs.c.scope,
            _jobs.c.result,
            _jobs.c.cancel_requested_at,
        )
    )


_START = start_statement(bindparam("job_id"))


def start_job(session: Session, job_id: int, *, now: datetime) -> StartedJob | None:
    """pending (or running, when a dead worker's task was reclaimed) → running.
    None if the job ended meanwhile (cancelled, timed out …): it must not run."""
    row = session.connection().execute(_START, {"job_id": job_id, "now": now}).one_or_none()
    return None if row is None else StartedJob(*row)


_IS_RUNNING = _jobs.c.status == literal_column(f"'{JobStatus.RUNNING.value}'")
_SAVE_PROGRESS = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"), _IS_RUNNING)
    .values(result=bindparam("new_result"))
    .returning(_jobs.c.cancel_requested_at)
)


class Saved(StrEnum):
    """What saving a running job's totals found."""

    RUNNING = "running"
    CANCEL_REQUESTED = "cancel_requested"  # stop after this batch
    NOT_RUNNING = "not_running"  # the sweeper ended it: roll the batch back


def save_progress(session: Session, job_id: int, result: dict[str, Any]) -> Saved:
    """Store the running totals of a job that is still running, and say whether it was
    asked to stop (one statement: the batch learns of a cancel for free)."""
    parameters = {"job_id": job_id, "new_result": result}
    row = session.connection().execute(_SAVE_PROGRESS, parameters).one_or_none()
    if row is None:
        return Saved.NOT_RUNNING
    return Saved.RUNNING if row.cancel_requested_at is None else Saved.CANCEL_REQUESTED


# --- cancelling and retrying ----------------------------------------------------------


def _cancel_values(now: datetime, by: str, reason: str) -> dict[str, Any]:
    return {"cancel_requested_at": now, "cancelled_by": by, "cancel_reason": reason}


def cancel_pending_job(
    session: Session, job_id: int, *, now: datetime, by: str, reason: str
) -> bool:
    """pending → cancelled at once; False if the job is not pending (any more)."""
    statement = (
        update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status == JobStatus.PENDING)
        .values(status=JobStatus.CANCELLED, finished_at=now, **_cancel_values(now, by, reason))
    )
    return execute_counting(session, statement) == 1


def request_stop(session: Session, job_id: int, *, now: datetime, by: str, reason: str) -> bool:
    """Ask a running job to stop at the end of its batch (its worker then ends it
    `cancelled`); False if it is not running, or was already asked."""
    statement = (
        update(_jobs)
        .where(_jobs.c.id == job_id, _IS_RUNNING, _jobs.c.cancel_requested_at.is_(None))
        .values(**_cancel_values(now, by, reason))
    )
    return execute_counting(session, statement) == 1


def link_retry(session: Session, job_id: int, *, retry_of: int) -> bool:
    """Record that job `job_id` retries job `retry_of`, if `retry_of` has no retry yet;
    False if it has one (the caller rolls back). The second statement is the decision:
    of concurrent retries, the first to update `retry_of` wins, and the others, once it
    commits, find its retry there."""
    session.execute(update(_jobs).where(_jobs.c.id == job_id).values(retry_of_id=retry_of))
    claimed = (
        update(_jobs)
        .where(_jobs.c.id == retry_of, _jobs.c.retried_by_id.is_(None))
        .values(retried_by_id=job_id)
    )
    return execute_counting(session, claimed) == 1


def retried_by(session: Session, job_id: int) -> int | None:
    """The job that retries job `job_id`, if any."""
    retry_id: int | None = session.scalar(select(_jobs.c.retried_by_id).where(_jobs.c.id == job_id))
    return retry_id


@cache
def finish_statement(*, with_result: bool, final: bool) -> Update:
    # Bind names unlike the columns': an execute() key named like a column would be
    # SET too.
    values: dict[str, Any] = {"status": bindparam("new_status"), "error": bindparam("new_error")}
    if with_result:
        values["result"] = bindparam("new_result")
    if final:
        values["finished_at"] = bindparam("finished_now")
    return update(_jobs).where(_jobs.c.id == bindparam("job_id"), _IS_RUNNING).values(**values)


def finish_parameters(
    job_id: int,
    *,
    status: JobStatus,
    now: datetime,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """finish_statement's parameters (it sets `result` only when there is one, and
    finished_at only for a final status)."""
    parameters: dict[str, Any] = {"job_id": job_id, "new_status": status, "new_error": error}
    if result is not None:
        parameters["new_result"] = result
    if status not in ACTIVE_JOB_STATUSES:
        parameters["finished_now"] = now
    return parameters


def finish_job(
    session: Session,
    job_id: int,
    *,
    status: JobStatus,
    now: datetime,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """running → a final status (or back to pending, for a retry or a hand-back).
    False if the job is not running any more."""
    final = status not in ACTIVE_JOB_STATUSES
    statement = finish_statement(with_result=result is not None, final=final)
    parameters = finish_parameters(job_id, status=status, now=now, result=result, error=error)
    return execute_counting(session, statement, parameters) == 1


# --- the sweeper's transitions ---------------------------------------------------------


def overdue_job_ids(session: Session, *, started_before: datetime) -> list[int]:
    """Running jobs that started before `started_before`."""
    statement = select(_jobs.c.id).where(
        _jobs.c.status == JobStatus.RUNNING, _jobs.c.started_at < started_before
    )
    return list(session.scalars(statement))


def time_out_jobs(
    session: Session, job_ids: list[int], *, started_before: datetime, now: datetime, reason: str
) -> list[tuple[int, uuid.UUID]]:
    """Mark those of `job_ids` that are still running and started before
    `started_before` as timed out."""
    if not job_ids:
        return []
    statement = (
        update(_jobs)
        .where(
            _jobs.c.id.in_(job_ids),
            _jobs.c.status == JobStatus.RUNNING,
            _jobs.c.started_at < started_before,
        )
        .values(status=JobStatus.TIMED_OUT, finished_at=now, error=reason)
        .returning(_jobs.c.id, _jobs.c.project_id)
    )
    return [(job_id, project_id) for job_id, project_id in session.execute(statement)]


def fail_active_jobs(
    session: Session, *, dead_task: Select[str | None], now: datetime
) -> list[tuple[int, uuid.UUID]]:
    """Mark failed every active job for which `dead_task` (a query correlated with the
    job's task id, selecting its last error) finds a row: its queue task is dead, so it
    can never run."""
    last_error = dead_task.scalar_subquery()
    statement = (
        update(_jobs)
        .where(is_active_job(), dead_task.exists())
        .values(
            status=JobStatus.FAILED,
            finished_at=now,
            error="queue gave up: " + func.coalesce(last_error, "no error recorded"),
        )
        .returning(_jobs.c.id, _jobs.c.project_id)
    )
    return [(job_id, project_id) for job_id, project_id in session.execute(statement)]
