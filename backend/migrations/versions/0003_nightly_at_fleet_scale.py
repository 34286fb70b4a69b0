"""The nightly run at fleet scale: tiers that expire with age, idle projects passed
over, spread ticks, and a claim whose cost does not grow with the queue.

- task_memories.tier_expires_at: when a consolidated memory's tier may next change
  with its age (30 or 90 days after it was learned), NULL once it is past both. The
  scheduled tick looks for memories whose tier expired through a partial index, so
  its cost follows the memories that change. Backfilled from consolidated_at: the
  first age boundary after the tier was set.
- consolidation_jobs.claimable_at: when the job's queue task may first be claimed
  (a spread tick, a debounced threshold crossing). Backfilled from created_at.
- consolidation_ticks.skipped_active / skipped_idle: projects a tick passed over.
- task_queue: the claim index ends with id, so the claim's ORDER BY available_at, id
  is read from the index in order, with no sort of the whole queue.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
EXPIRING = "tier_expires_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("task_memories") as memories:
        memories.add_column(sa.Column("tier_expires_at", TIMESTAMP, nullable=True))
    op.execute(_backfill_tier_expiry(op.get_bind().dialect.name))
    op.create_index(
        "ix_task_memories_tier_expires_at",
        "task_memories",
        ["tier_expires_at", "project_id"],
        postgresql_where=sa.text(EXPIRING),
        sqlite_where=sa.text(EXPIRING),
    )

    with op.batch_alter_table("consolidation_jobs") as jobs:
        jobs.add_column(sa.Column("claimable_at", TIMESTAMP, nullable=True))
    op.execute("UPDATE consolidation_jobs SET claimable_at = created_at")

    with op.batch_alter_table("consolidation_ticks") as ticks:
        for column in ("skipped_active", "skipped_idle"):
            ticks.add_column(sa.Column(column, sa.Integer(), nullable=False, server_default="0"))

    op.drop_index("ix_task_queue_claimable", table_name="task_queue")
    op.create_index(
        "ix_task_queue_claimable",
        "task_queue",
        ["task_type", "available_at", "id"],
        postgresql_where=sa.text("state = 'queued'"),
        sqlite_where=sa.text("state = 'queued'"),
    )


def _backfill_tier_expiry(dialect: str) -> str:
    """The first of learned_at + 30 days and + 90 days that is after consolidated_at."""
    if dialect == "postgresql":
        hot, warm = "learned_at + interval '30 days'", "learned_at + interval '90 days'"
    else:  # SQLite keeps naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'; keep the format
        hot = "datetime(learned_at, '+30 days') || substr(learned_at, 20)"
        warm = "datetime(learned_at, '+90 days') || substr(learned_at, 20)"
    return (
        f"UPDATE task_memories SET tier_expires_at = CASE "
        f"WHEN {hot} > consolidated_at THEN {hot} "
        f"WHEN {warm} > consolidated_at THEN {warm} END "
        f"WHERE is_consolidated AND tier IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_task_queue_claimable", table_name="task_queue")
    op.create_index(
        "ix_task_queue_claimable",
        "task_queue",
        ["task_type", "available_at"],
        postgresql_where=sa.text("state = 'queued'"),
        sqlite_where=sa.text("state = 'queued'"),
    )
    with op.batch_alter_table("consolidation_ticks") as ticks:
        ticks.drop_column("skipped_idle")
        ticks.drop_column("skipped_active")
    with op.batch_alter_table("consolidation_jobs") as jobs:
        jobs.drop_column("claimable_at")
    op.drop_index("ix_task_memories_tier_expires_at", table_name="task_memories")
    with op.batch_alter_table("task_memories") as memories:
        memories.drop_column("tier_expires_at")
