"""A failure is retried once: consolidation_jobs.retried_by_id names the one job that
retries a failed or timed-out job.

The retry sets it on the failed job in the transaction that creates the retry, only
while it is still NULL: the database, not a read before the write, decides which of
several concurrent retries wins. Jobs retried more than once before this revision
keep their first retry as theirs (the later ones still say, in retry_of_id, what
they retried).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN alone: SQLite's ALTER TABLE does it in place (no batch copy).
    op.add_column(
        "consolidation_jobs",
        sa.Column("retried_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
    )
    op.execute(
        "UPDATE consolidation_jobs SET retried_by_id = ("
        " SELECT min(retry.id) FROM consolidation_jobs retry"
        " WHERE retry.retry_of_id = consolidation_jobs.id)"
        " WHERE id IN (SELECT retry_of_id FROM consolidation_jobs WHERE retry_of_id IS NOT NULL)"
    )


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place when nothing indexes or references it.
    op.drop_column("consolidation_jobs", "retried_by_id")
