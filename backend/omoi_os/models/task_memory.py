"""A task memory: one lesson an agent learned, waiting to be consolidated."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from omoi_os.clock import utc_now
from omoi_os.models.base import Base, BigIntId, string_enum


class MemoryType(StrEnum):
    """What kind of lesson a memory is (it weighs in its score)."""

    ERROR_FIX = "error_fix"
    DISCOVERY = "discovery"
    DECISION = "decision"
    LEARNING = "learning"
    WARNING = "warning"
    CODEBASE_KNOWLEDGE = "codebase_knowledge"


class MemoryTier(StrEnum):
    """The tier consolidation put a memory in, by its score and age."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


class TaskMemory(Base):
    __tablename__ = "task_memories"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    memory_type: Mapped[MemoryType] = mapped_column(string_enum(MemoryType, "memory_type"))
    execution_summary: Mapped[str] = mapped_column(Text)
    success: Mapped[bool] = mapped_column(default=True)
    reused_count: Mapped[int] = mapped_column(default=0)
    learned_at: Mapped[datetime] = mapped_column(default=utc_now)
    # The host's own reference for this memory (its row id, its agent's run id):
    # stored as given, never read by consolidation, returned with the memory. The
    # column is "metadata"; the attribute cannot be (SQLAlchemy's declarative name).
    # Plain JSON, not JSONB, on PostgreSQL: kept verbatim (any JSON the host sends,
    # a \u0000 in it included, which jsonb refuses) and never queried into.
    memory_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)

    is_consolidated: Mapped[bool] = mapped_column(default=False)
    consolidated_at: Mapped[datetime | None]
    # The job that consolidated it: a plain number, not a foreign key, so that
    # retention can delete old jobs without touching (or scanning) the memories.
    consolidation_job_id: Mapped[int | None] = mapped_column(BigIntId)
    consolidation_score: Mapped[float | None]
    tier: Mapped[MemoryTier | None] = mapped_column(string_enum(MemoryTier, "memory_tier"))
    # When the tier may next change with the memory's age (the first of 30 and 90 days
    # after learned_at that is after the tier was set); NULL once past both.
    tier_expires_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("reused_count >= 0", name="reused_count_not_negative"),
        # The threshold probe and the worker read "unconsolidated memories of a
        # project"; a partial index keeps that read small however large the
        # consolidated history grows.
        Index(
            "ix_task_memories_unconsolidated",
            "project_id",
            "id",
            postgresql_where=text("NOT is_consolidated"),
            sqlite_where=text("is_consolidated = 0"),
        ),
        # All of a project's memories (the worker's score ranking). Only project_id:
        # btree deduplication keeps one entry per page of a project's rows, which
        # makes the consolidation UPDATE (not HOT: is_consolidated is in the partial
        # index's predicate) ~40% cheaper than a (project_id, learned_at) index did.
        Index("ix_task_memories_project_id", "project_id"),
        # What consolidation decided, best first: a project's memories of one tier by
        # score (the agent's "my hot memories"), read backwards from the end of its tier's range
        # however many memories the project holds.
        Index(
            "ix_task_memories_ranking",
            "project_id",
            "tier",
            "consolidation_score",
            "id",
        ),
        # The nightly tick's "whose tier expired by now": only memories still young
        # enough for their tier to change are in it, so the lookup costs what changes.
        Index(
            "ix_task_memories_tier_expires_at",
            "tier_expires_at",
            "project_id",
            postgresql_where=text("tier_expires_at IS NOT NULL"),
            sqlite_where=text("tier_expires_at IS NOT NULL"),
        ),
    )
