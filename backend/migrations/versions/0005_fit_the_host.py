"""Fit a host: its keys for our projects, its references on our memories, and a read
of what consolidation decided.

- projects.external_key: the host's own identifier of a project, unique (NULL for
  projects made without one). A unique index rather than a constraint, so SQLite
  adds it without copying the table.
- task_memories.metadata: the host's own reference for a memory, kept verbatim (json,
  not jsonb, on PostgreSQL: any JSON the host sends, and never queried into).
- ix_task_memories_ranking (project_id, tier, consolidation_score, id): a project's
  memories of one tier, best first, read from the end of the tier's range.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN alone: SQLite's ALTER TABLE does it in place (no batch copy, which
    # would cascade the projects' deletion to every memory and job).
    op.add_column("projects", sa.Column("external_key", sa.String(200), nullable=True))
    op.create_index("uq_projects_external_key", "projects", ["external_key"], unique=True)
    op.add_column("task_memories", sa.Column("metadata", sa.JSON(), nullable=True))
    op.create_index(
        "ix_task_memories_ranking",
        "task_memories",
        ["project_id", "tier", "consolidation_score", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_task_memories_ranking", table_name="task_memories")
    op.drop_index("uq_projects_external_key", table_name="projects")
    # SQLite (3.35+) drops a column in place when nothing indexes or references it.
    op.drop_column("task_memories", "metadata")
    op.drop_column("projects", "external_key")
