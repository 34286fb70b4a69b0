"""The SQL of consolidation jobs. Every function works inside the caller's session
and transaction; uniqueness is left to the database's indexes (INSERT … ON CONFLICT
DO NOTHING), never to a count-then-insert."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    String,
    Uuid,
    bindparam,
    cast,
    exists,
    false,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from omoi_os.models import (
    ConsolidationJob,
    ConsolidationTick,
    JobStatus,
    Project,
    QueuedTask,
    TaskMemory,
    TaskState,
    TriggerType,
    is_active_job,
)
from omoi_os.models.base import cast_table
from omoi_os.services.consolidation.decisions import ThresholdProbe
from omoi_os.services.consolidation.errors import JobNotFound
from omoi_os.services.database import execute_counting, insert_ignoring_conflicts

# The queue's task_type for consolidation jobs; the task_id is the job id as text.
CONSOLIDATION_TASK = "consolidation"
SCHEDULER_PRINCIPAL = "scheduler"

_jobs = cast_table(ConsolidationJob)


def insert_job(
    session: Session,
    *,
    project_id: uuid.UUID,
    trigger_type: TriggerType,
    scope: dict[str, Any],
    triggered_by: str,
    now: datetime,
) -> int | None:
    """Insert a pending job; None if the project already has an active one."""
    statement = (
        insert_ignoring_conflicts(session, ConsolidationJob)
        .values(
            project_id=project_id,
            trigger_type=trigger_type,
            scope=scope,
            status=JobStatus.PENDING,
            triggered_by=triggered_by,
            created_at=now,
        )
        .returning(_jobs.c.id)
    )
    job_id: int | None = session.execute(statement).scalar_one_or_none()
    return job_id


def insert_tick_jobs(
    session: Session, *, tick: datetime, scope: dict[str, Any], now: datetime
) -> int:
    """One INSERT … SELECT: a pending job for `tick` for every active project that has
    no active job and no job for this tick yet. Returns how many were created.

    Rows go in project-id order so concurrent replicas lock them in the same order
    (no deadlock); a replica that loses the race waits for the winner's commit and
    then skips the rows it already wrote."""
    has_active_job = exists().where(
        ConsolidationJob.project_id == Project.id,
        is_active_job(),
    )
    rows = (
        select(
            Project.id,
            literal(TriggerType.SCHEDULED.value),
            literal(scope, _jobs.c.scope.type),
            literal(JobStatus.PENDING.value),
            literal(SCHEDULER_PRINCIPAL),
            literal(tick, _jobs.c.scheduled_for.type),
            literal(now, _jobs.c.created_at.type),
        )
        .where(Project.is_active, ~has_active_job)
        .order_by(Project.id)
    )
    columns = [
        "project_id",
        "trigger_type",
        "scope",
        "status",
        "triggered_by",
        "scheduled_for",
        "created_at",
    ]
    statement = insert_ignoring_conflicts(session, ConsolidationJob).from_select(columns, rows)
    return execute_counting(session, statement)


def tick_job_task_ids(tick: datetime) -> Any:
    """SELECT of the queue task ids of `tick`'s pending jobs (for the queue's INSERT … SELECT)."""
    return select(cast(ConsolidationJob.id, String)).where(
        ConsolidationJob.scheduled_for == tick,
        ConsolidationJob.status == JobStatus.PENDING,
    )


def record_tick(session: Session, tick: datetime, *, now: datetime) -> bool:
    """Claim `tick` for this run: True if no run recorded it before. A concurrent run's
    uncommitted claim makes this wait for its outcome (PostgreSQL), so exactly one
    run of a tick writes its jobs."""
    statement = (
        insert_ignoring_conflicts(session, ConsolidationTick)
        .values(scheduled_for=tick, fired_at=now, jobs_created=0)
        .returning(cast_table(ConsolidationTick).c.scheduled_for)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def set_tick_jobs_created(session: Session, tick: datetime, created: int) -> None:
    session.execute(
        update(ConsolidationTick)
        .where(ConsolidationTick.scheduled_for == tick)
        .values(jobs_created=created)
    )


def tick_recorded(session: Session, tick: datetime) -> bool:
    """Did a run of `tick` commit (here or on another replica)?"""
    statement = select(exists().where(ConsolidationTick.scheduled_for == tick))
    return bool(session.scalar(statement))


def count_active_projects(session: Session) -> int:
    return session.scalar(select(func.count()).where(Project.is_active)) or 0


def active_job_id(session: Session, project_id: uuid.UUID) -> int | None:
    """The project's pending or running job, if any."""
    statement = select(ConsolidationJob.id).where(
        ConsolidationJob.project_id == project_id,
        is_active_job(),
    )
    return session.scalar(statement)


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
    limit: int = 50,
    offset: int = 0,
) -> list[ConsolidationJob]:
    """Jobs, newest first: of one project, or of all when project_id is None."""
    statement = (
        select(ConsolidationJob).order_by(ConsolidationJob.id.desc()).limit(limit).offset(offset)
    )
    if project_id is not None:
        statement = statement.where(ConsolidationJob.project_id == project_id)
    if status is not None:
        statement = statement.where(ConsolidationJob.status == status)
    return list(session.scalars(statement))


def count_jobs_by_status(session: Session, statuses: list[JobStatus]) -> dict[JobStatus, int]:
    statement = (
        select(ConsolidationJob.status, func.count())
        .where(ConsolidationJob.status.in_(statuses))
        .group_by(ConsolidationJob.status)
    )
    counts = {status: count for status, count in session.execute(statement)}
    return {status: counts.get(status, 0) for status in statuses}


def _threshold_probe_statement() -> Select[Any]:
    project_id = bindparam("project_id", type_=Uuid)
    unconsolidated = (
        select(TaskMemory.id)
        .where(TaskMemory.project_id == project_id, TaskMemory.is_consolidated == false())
        .limit(bindparam("threshold", type_=Integer))
        .subquery()
    )
    active_job = select(ConsolidationJob.id).where(
        ConsolidationJob.project_id == project_id, is_active_job()
    )
    last_finished = select(func.max(ConsolidationJob.finished_at)).where(
        ConsolidationJob.project_id == project_id
    )
    return select(
        Project.is_active,
        active_job.scalar_subquery(),
        last_finished.scalar_subquery(),
        select(func.count()).select_from(unconsolidated).scalar_subquery(),
    ).where(Project.id == project_id)


# Built once: this runs after every memory write, and building it is most of its cost.
_THRESHOLD_PROBE = _threshold_probe_statement()


def probe_threshold(
    session: Session, project_id: uuid.UUID, threshold: int
) -> ThresholdProbe | None:
    """Everything the threshold decision needs, in one round trip; None if the project
    does not exist. The memory count stops at `threshold` rows (a LIMIT inside the
    count, served by the partial index), so its cost does not grow with the backlog."""
    params = {"project_id": project_id, "threshold": threshold}
    row = session.connection().execute(_THRESHOLD_PROBE, params).one_or_none()
    return None if row is None else ThresholdProbe(*row)


def time_out_overdue(
    session: Session, *, started_before: datetime, now: datetime, reason: str
) -> list[tuple[int, uuid.UUID]]:
    """Mark running jobs that started before `started_before` as timed out."""
    statement = (
        update(_jobs)
        .where(
            ConsolidationJob.status == JobStatus.RUNNING,
            ConsolidationJob.started_at < started_before,
        )
        .values(status=JobStatus.TIMED_OUT, finished_at=now, error=reason)
        .returning(_jobs.c.id, _jobs.c.project_id)
    )
    return [(job_id, project_id) for job_id, project_id in session.execute(statement)]


def fail_jobs_with_dead_tasks(session: Session, *, now: datetime) -> list[tuple[int, uuid.UUID]]:
    """Active jobs whose queue task is dead (its attempts ran out, e.g. workers kept
    crashing) can never run: mark them failed so the project is free again."""
    dead_task = select(QueuedTask.last_error).where(
        QueuedTask.task_type == CONSOLIDATION_TASK,
        QueuedTask.task_id == cast(ConsolidationJob.id, String),
        QueuedTask.state == TaskState.DEAD,
    )
    statement = (
        update(_jobs)
        .where(is_active_job(), dead_task.exists())
        .values(
            status=JobStatus.FAILED,
            finished_at=now,
            error="queue gave up: "
            + func.coalesce(dead_task.scalar_subquery(), "no error recorded"),
        )
        .returning(_jobs.c.id, _jobs.c.project_id)
    )
    return [(job_id, project_id) for job_id, project_id in session.execute(statement)]


# --- the worker's transitions -----------------------------------------------------------


def start_job(session: Session, job_id: int, *, now: datetime) -> ConsolidationJob | None:
    """pending (or running, when a dead worker's task was reclaimed) → running.
    None if the job ended meanwhile (cancelled, timed out …): it must not run."""
    statement = (
        update(_jobs)
        .where(ConsolidationJob.id == job_id, is_active_job())
        .values(status=JobStatus.RUNNING, started_at=now, error=None)
        .returning(_jobs.c.id)
    )
    if session.execute(statement).scalar_one_or_none() is None:
        return None
    return session.get(ConsolidationJob, job_id, populate_existing=True)


def save_progress(session: Session, job_id: int, result: dict[str, Any]) -> bool:
    """Store the running totals of a job that is still running; False if it is not
    (the sweeper timed it out): the caller must stop and roll back its batch."""
    statement = (
        update(_jobs)
        .where(ConsolidationJob.id == job_id, ConsolidationJob.status == JobStatus.RUNNING)
        .values(result=result)
    )
    return execute_counting(session, statement) == 1


def finish_job(
    session: Session,
    job_id: int,
    *,
    status: JobStatus,
    now: datetime,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """running → a final status (or back to pending, for a retry or a release)."""
    values: dict[str, Any] = {"status": status, "error": error}
    if result is not None:
        values["result"] = result
    if status not in (JobStatus.PENDING, JobStatus.RUNNING):
        values["finished_at"] = now
    statement = (
        update(_jobs)
        .where(ConsolidationJob.id == job_id, ConsolidationJob.status == JobStatus.RUNNING)
        .values(**values)
    )
    return execute_counting(session, statement) == 1
