"""A project: the unit whose memories are consolidated together."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from omoi_os.clock import utc_now
from omoi_os.models.base import Base


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    # The host application's own identifier of this project (a workspace id, a repo
    # slug): unique, so `ensure(key)` finds or makes exactly one project per key.
    external_key: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    # When the last job that counts for the cooldown ended: one that consolidated
    # something, failed or timed out (a no-op job does not silence the threshold).
    cooldown_from: Mapped[datetime | None]
    # A threshold crossing seen while a job was active or the cooldown ran, fired by
    # the periodic pass once both are over.
    threshold_crossed_at: Mapped[datetime | None]
    # Paused: no scheduled or threshold job (a manual trigger still runs, and says so).
    paused_at: Mapped[datetime | None]
    paused_by: Mapped[str | None] = mapped_column(String(200))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # This project's own threshold and cooldown; NULL: the global setting.
    consolidation_threshold: Mapped[int | None]
    consolidation_cooldown: Mapped[int | None]

    __table_args__ = (
        # PostgreSQL only (migration 0004: on SQLite a new CHECK means copying the
        # table); the service validates the overrides on both.
        CheckConstraint("consolidation_threshold >= 1", name="threshold_positive").ddl_if(
            dialect="postgresql"
        ),
        CheckConstraint("consolidation_cooldown >= 0", name="cooldown_not_negative").ddl_if(
            dialect="postgresql"
        ),
        # A unique index, not a constraint: on SQLite adding a constraint would copy
        # the table (and its foreign keys' cascades with it).
        Index("uq_projects_external_key", "external_key", unique=True),
        Index(
            "ix_projects_threshold_crossed_at",
            "threshold_crossed_at",
            postgresql_where=text("threshold_crossed_at IS NOT NULL"),
            sqlite_where=text("threshold_crossed_at IS NOT NULL"),
        ),
    )
