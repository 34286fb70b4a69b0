"""A row of the durable task queue (see services/task_queue.py for its life cycle)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ColumnElement,
    Index,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from omoi_os.clock import utc_now
from omoi_os.models.base import Base, BigIntId, JsonDocument, string_enum


class TaskState(StrEnum):
    QUEUED = "queued"  # waiting; claimable from available_at on
    CLAIMED = "claimed"  # leased to claimed_by until lease_expires_at
    DONE = "done"
    DEAD = "dead"  # failed max_attempts times


def in_state(*states: TaskState) -> ColumnElement[bool]:
    """SQL for "the task is in one of `states`", the values inline as the partial
    indexes spell them: a prepared statement's generic plan can then use those indexes
    (a bound parameter could be any state, so the planner could not)."""
    values: list[ColumnElement[str]] = [literal_column(f"'{state.value}'") for state in states]
    state: ColumnElement[str] = QueuedTask.__table__.c.state  # Core: no ORM in the statement
    return state.in_(values)


class QueuedTask(Base):
    __tablename__ = "task_queue"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    task_type: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    state: Mapped[TaskState] = mapped_column(
        string_enum(TaskState, "task_state"),
        default=TaskState.QUEUED,
    )
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    available_at: Mapped[datetime] = mapped_column(default=utc_now)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    # New for every claim: what fences a worker's later writes to the task.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        # Enqueueing is idempotent: one row per (task_type, task_id).
        UniqueConstraint("task_type", "task_id"),
        CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
        Index(
            "ix_task_queue_claimable",
            "task_type",
            "available_at",
            "id",  # the claim's order, read from the index: no sort of the whole queue
            postgresql_where=text("state = 'queued'"),
            sqlite_where=text("state = 'queued'"),
        ),
        # Retention: finished tasks oldest first.
        Index(
            "ix_task_queue_finished_at",
            "finished_at",
            postgresql_where=text("state IN ('done', 'dead')"),
            sqlite_where=text("state IN ('done', 'dead')"),
        ),
        Index(
            "ix_task_queue_leases",
            "lease_expires_at",
            postgresql_where=text("state = 'claimed'"),
            sqlite_where=text("state = 'claimed'"),
        ),
    )
