"""A consolidation job: one decision to consolidate a project's memories, and its outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from omoi_os.clock import utc_now
from omoi_os.models.base import Base, BigIntId, JsonDocument, string_enum


class JobStatus(StrEnum):
    """Where a consolidation job is: pending and running are active (one per project)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)


class TriggerType(StrEnum):
    """What started a consolidation job."""

    SCHEDULED = "scheduled"
    THRESHOLD = "threshold"
    MANUAL = "manual"


# Derived once from ACTIVE_JOB_STATUSES: the partial unique index and the service's
# queries (is_active_job) must spell the same predicate.
_ACTIVE_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in ACTIVE_JOB_STATUSES))


def is_active_job() -> ColumnElement[bool]:
    """SQL for "this job is pending or running", with the statuses inline as the
    partial unique index spells them: no per-execution IN-list expansion, and the
    planner can match the index even in a generic plan."""
    statuses: list[ColumnElement[str]] = [
        literal_column(f"'{status.value}'") for status in ACTIVE_JOB_STATUSES
    ]
    return ConsolidationJob.status.in_(statuses)


class ConsolidationJob(Base):
    __tablename__ = "consolidation_jobs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    trigger_type: Mapped[TriggerType] = mapped_column(string_enum(TriggerType, "trigger_type"))
    scope: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    status: Mapped[JobStatus] = mapped_column(
        string_enum(JobStatus, "job_status"),
        default=JobStatus.PENDING,
    )
    triggered_by: Mapped[str] = mapped_column(String(200))
    # The cron tick (UTC) a scheduled job stands for; NULL for other triggers.
    scheduled_for: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    # When its queue task may first be claimed: a spread tick's per-project offset, a
    # debounced threshold crossing; otherwise when it was created.
    claimable_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    error: Mapped[str | None] = mapped_column(Text)
    # Cancelling: a pending job ends `cancelled` at once; a running one is asked to stop
    # (cancel_requested_at) and ends `cancelled` after its current batch.
    cancel_requested_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(200))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # The failed or timed-out job this one retries: a plain number, since retention
    # may delete that job.
    retry_of_id: Mapped[int | None] = mapped_column(BigIntId)
    # The one job that retries this failed or timed-out one: set with the retry's own
    # insert, only while NULL, so of concurrent retries the database admits one.
    retried_by_id: Mapped[int | None] = mapped_column(BigIntId)
    # A manual job created while its project was paused says so.
    project_paused: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (
        # Invariant 1 (docs/invariants.md): one pending or running job per project.
        Index(
            "uq_consolidation_jobs_one_active_per_project",
            "project_id",
            unique=True,
            postgresql_where=text(_ACTIVE_SQL),
            sqlite_where=text(_ACTIVE_SQL),
        ),
        # Invariant 2 (docs/invariants.md): one scheduled job per project per tick.
        # scheduled_for leads so a tick's jobs can be found by it; NULLs never clash.
        UniqueConstraint("scheduled_for", "project_id"),
        Index("ix_consolidation_jobs_project_id_id", "project_id", "id"),
        Index("ix_consolidation_jobs_project_id_finished_at", "project_id", "finished_at"),
        # Listing jobs across projects by status, newest first.
        Index("ix_consolidation_jobs_status_id", "status", "id"),
        # Retention: finished jobs oldest first.
        Index(
            "ix_consolidation_jobs_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
        Index(
            "ix_consolidation_jobs_running_started_at",
            "started_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )


class ConsolidationTick(Base):
    """One row per schedule tick that a replica ran (its fan-out committed with it).

    The primary key is the tick's instant: the first replica to insert it runs the
    fan-out; any other, now or after a restart, sees the row and does nothing more.
    """

    __tablename__ = "consolidation_ticks"

    scheduled_for: Mapped[datetime] = mapped_column(primary_key=True)
    fired_at: Mapped[datetime]
    jobs_created: Mapped[int] = mapped_column(default=0)
    # Active projects passed over: a job was still active / there was nothing to do.
    skipped_active: Mapped[int] = mapped_column(default=0, server_default="0")
    skipped_idle: Mapped[int] = mapped_column(default=0, server_default="0")
    # Active projects passed over because they were paused.
    skipped_paused: Mapped[int] = mapped_column(default=0, server_default="0")
    # The whole tick was passed over: the schedule was paused (recorded, never caught up).
    schedule_paused: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Run late, at start-up or by the periodic pass, after no replica ran it on time.
    caught_up: Mapped[bool] = mapped_column(default=False, server_default=false())


class SchedulePause(Base):
    """The schedule's pause: while this single row exists, scheduled ticks create no
    jobs (each is recorded as passed over). In the database, so that every replica
    obeys it at once and it survives restarts."""

    __tablename__ = "consolidation_schedule_pause"

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    paused_at: Mapped[datetime]
    paused_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
