"""Initial schema: projects, task memories, consolidation jobs and ticks, the task queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True)


def _partial(predicate: str) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )

    op.create_table(
        "task_queue",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("payload", JSON_DOCUMENT, nullable=False),
        sa.Column(
            "state", _enum("task_state", "queued", "claimed", "done", "dead"), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", TIMESTAMP, nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_task_queue_max_attempts_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_queue")),
        sa.UniqueConstraint("task_type", "task_id", name=op.f("uq_task_queue_task_type_task_id")),
    )
    op.create_index(
        "ix_task_queue_claimable",
        "task_queue",
        ["task_type", "available_at"],
        **_partial("state = 'queued'"),
    )
    op.create_index(
        "ix_task_queue_leases", "task_queue", ["lease_expires_at"], **_partial("state = 'claimed'")
    )

    op.create_table(
        "consolidation_jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column(
            "trigger_type",
            _enum("trigger_type", "scheduled", "threshold", "manual"),
            nullable=False,
        ),
        sa.Column("scope", JSON_DOCUMENT, nullable=False),
        sa.Column(
            "status",
            _enum(
                "job_status", "pending", "running", "completed", "failed", "timed_out", "cancelled"
            ),
            nullable=False,
        ),
        sa.Column("triggered_by", sa.String(length=200), nullable=False),
        sa.Column("scheduled_for", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("result", JSON_DOCUMENT, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_consolidation_jobs_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consolidation_jobs")),
        sa.UniqueConstraint(
            "scheduled_for",
            "project_id",
            name=op.f("uq_consolidation_jobs_scheduled_for_project_id"),
        ),
    )
    # Invariant 1 (docs/invariants.md): one pending-or-running job per project.
    op.create_index(
        "uq_consolidation_jobs_one_active_per_project",
        "consolidation_jobs",
        ["project_id"],
        unique=True,
        **_partial("status IN ('pending', 'running')"),
    )
    op.create_index(
        "ix_consolidation_jobs_project_id_id", "consolidation_jobs", ["project_id", "id"]
    )
    op.create_index(
        "ix_consolidation_jobs_project_id_finished_at",
        "consolidation_jobs",
        ["project_id", "finished_at"],
    )
    op.create_index(
        "ix_consolidation_jobs_running_started_at",
        "consolidation_jobs",
        ["started_at"],
        **_partial("status = 'running'"),
    )

    op.create_table(
        "consolidation_ticks",
        sa.Column("scheduled_for", TIMESTAMP, nullable=False),
        sa.Column("fired_at", TIMESTAMP, nullable=False),
        sa.Column("jobs_created", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scheduled_for", name=op.f("pk_consolidation_ticks")),
    )

    op.create_table(
        "task_memories",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column(
            "memory_type",
            _enum(
                "memory_type",
                "error_fix",
                "discovery",
                "decision",
                "learning",
                "warning",
                "codebase_knowledge",
            ),
            nullable=False,
        ),
        sa.Column("execution_summary", sa.Text(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("reused_count", sa.Integer(), nullable=False),
        sa.Column("learned_at", TIMESTAMP, nullable=False),
        sa.Column("is_consolidated", sa.Boolean(), nullable=False),
        sa.Column("consolidated_at", TIMESTAMP, nullable=True),
        sa.Column("consolidation_job_id", BIG_ID, nullable=True),
        sa.Column("consolidation_score", sa.Double(), nullable=True),
        sa.Column("tier", _enum("memory_tier", "hot", "warm", "cold"), nullable=True),
        sa.CheckConstraint(
            "reused_count >= 0", name=op.f("ck_task_memories_reused_count_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["consolidation_job_id"],
            ["consolidation_jobs.id"],
            name=op.f("fk_task_memories_consolidation_job_id_consolidation_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_task_memories_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_memories")),
    )
    op.create_index(
        "ix_task_memories_unconsolidated",
        "task_memories",
        ["project_id", "id"],
        postgresql_where=sa.text("NOT is_consolidated"),
        sqlite_where=sa.text("is_consolidated = 0"),
    )
    op.create_index("ix_task_memories_project_id", "task_memories", ["project_id"])


def downgrade() -> None:
    op.drop_table("task_memories")
    op.drop_table("consolidation_ticks")
    op.drop_table("consolidation_jobs")
    op.drop_table("task_queue")
    op.drop_table("projects")
