"""Projects remember when their cooldown started and a threshold crossing that could
not fire yet.

- projects.cooldown_from: when the project's last job that counts for the cooldown
  ended (it consolidated something, or failed, or timed out). Backfilled from the
  latest finished job, as the previous release measured it.
- projects.threshold_crossed_at: a threshold crossing seen while a job was active or
  the cooldown ran; the periodic pass fires it once both are over.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("projects") as projects:
        projects.add_column(sa.Column("cooldown_from", TIMESTAMP, nullable=True))
        projects.add_column(sa.Column("threshold_crossed_at", TIMESTAMP, nullable=True))
    op.execute(
        "UPDATE projects SET cooldown_from = (SELECT max(j.finished_at) "
        "FROM consolidation_jobs j WHERE j.project_id = projects.id)"
    )
    op.create_index(
        "ix_projects_threshold_crossed_at",
        "projects",
        ["threshold_crossed_at"],
        postgresql_where=sa.text("threshold_crossed_at IS NOT NULL"),
        sqlite_where=sa.text("threshold_crossed_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_projects_threshold_crossed_at", table_name="projects")
    with op.batch_alter_table("projects") as projects:
        projects.drop_column("threshold_crossed_at")
        projects.drop_column("cooldown_from")
