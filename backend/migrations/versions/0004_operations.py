"""Operating it for a year: cancel and retry jobs, pause the schedule or a project,
per-project threshold and cooldown, the ticks' history, and retention.

- consolidation_jobs: cancel_requested_at, cancelled_by, cancel_reason (a running
  job asked to stop ends `cancelled` after its batch); retry_of_id (the failed or
  timed-out job it retries: a plain number, like a memory's job id, since retention
  may delete that job);
  project_paused (a manual job made while its project was paused). Indexes for
  listing across projects by status and for retention by finished_at.
- projects: paused_at, paused_by, pause_reason; consolidation_threshold and
  consolidation_cooldown overrides (NULL: the global setting), checked on PostgreSQL.
- consolidation_ticks: skipped_paused, schedule_paused, caught_up.
- consolidation_schedule_pause: one row while the schedule is paused.
- task_queue: an index for retention of done and dead tasks by finished_at.
- task_memories.consolidation_job_id is no longer a foreign key: retention deletes
  old jobs, and the memories keep their consolidation data untouched (a foreign key
  would make each deleted job update, or scan for, its memories).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FINISHED_JOB = "finished_at IS NOT NULL"
FINISHED_TASK = "state IN ('done', 'dead')"
MEMORY_JOB_FK = "fk_task_memories_consolidation_job_id_consolidation_jobs"
OVERRIDE_CHECKS = {
    "ck_projects_threshold_positive": "consolidation_threshold >= 1",
    "ck_projects_cooldown_not_negative": "consolidation_cooldown >= 0",
}


def _not_null_false(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def upgrade() -> None:
    # First: on SQLite, any later copy of consolidation_jobs would otherwise clear the
    # memories' job ids (ON DELETE SET NULL fires when the old table is dropped).
    with op.batch_alter_table("task_memories") as memories:
        memories.drop_constraint(op.f(MEMORY_JOB_FK), type_="foreignkey")
    with op.batch_alter_table("consolidation_jobs") as jobs:
        jobs.add_column(sa.Column("cancel_requested_at", TIMESTAMP, nullable=True))
        jobs.add_column(sa.Column("cancelled_by", sa.String(200), nullable=True))
        jobs.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
        jobs.add_column(sa.Column("retry_of_id", BIG_ID, nullable=True))
        jobs.add_column(_not_null_false("project_paused"))
    op.create_index("ix_consolidation_jobs_status_id", "consolidation_jobs", ["status", "id"])
    op.create_index(
        "ix_consolidation_jobs_finished_at",
        "consolidation_jobs",
        ["finished_at"],
        postgresql_where=sa.text(FINISHED_JOB),
        sqlite_where=sa.text(FINISHED_JOB),
    )

    with op.batch_alter_table("projects") as projects:
        projects.add_column(sa.Column("paused_at", TIMESTAMP, nullable=True))
        projects.add_column(sa.Column("paused_by", sa.String(200), nullable=True))
        projects.add_column(sa.Column("pause_reason", sa.Text(), nullable=True))
        projects.add_column(sa.Column("consolidation_threshold", sa.Integer(), nullable=True))
        projects.add_column(sa.Column("consolidation_cooldown", sa.Integer(), nullable=True))
    # PostgreSQL only: on SQLite a new CHECK means copying the table, and dropping the
    # old projects table would cascade to every memory and job (foreign keys are on).
    if op.get_bind().dialect.name == "postgresql":
        for name, check in OVERRIDE_CHECKS.items():
            op.create_check_constraint(op.f(name), "projects", check)

    with op.batch_alter_table("consolidation_ticks") as ticks:
        ticks.add_column(
            sa.Column("skipped_paused", sa.Integer(), nullable=False, server_default="0")
        )
        ticks.add_column(_not_null_false("schedule_paused"))
        ticks.add_column(_not_null_false("caught_up"))

    op.create_table(
        "consolidation_schedule_pause",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("paused_at", TIMESTAMP, nullable=False),
        sa.Column("paused_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_consolidation_schedule_pause_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consolidation_schedule_pause")),
    )

    op.create_index(
        "ix_task_queue_finished_at",
        "task_queue",
        ["finished_at"],
        postgresql_where=sa.text(FINISHED_TASK),
        sqlite_where=sa.text(FINISHED_TASK),
    )


def downgrade() -> None:
    # Job ids of memories whose job retention deleted name no job: cleared, so that
    # the foreign key can be put back.
    op.execute(
        "UPDATE task_memories SET consolidation_job_id = NULL WHERE consolidation_job_id "
        "IS NOT NULL AND consolidation_job_id NOT IN (SELECT id FROM consolidation_jobs)"
    )
    with op.batch_alter_table("task_memories") as memories:
        memories.create_foreign_key(
            op.f(MEMORY_JOB_FK),
            "consolidation_jobs",
            ["consolidation_job_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.drop_index("ix_task_queue_finished_at", table_name="task_queue")
    op.drop_table("consolidation_schedule_pause")
    with op.batch_alter_table("consolidation_ticks") as ticks:
        for column in ("caught_up", "schedule_paused", "skipped_paused"):
            ticks.drop_column(column)
    if op.get_bind().dialect.name == "postgresql":
        for name in OVERRIDE_CHECKS:
            op.drop_constraint(op.f(name), "projects", type_="check")
    with op.batch_alter_table("projects") as projects:
        for column in (
            "consolidation_cooldown",
            "consolidation_threshold",
            "pause_reason",
            "paused_by",
            "paused_at",
        ):
            projects.drop_column(column)
    op.drop_index("ix_consolidation_jobs_finished_at", table_name="consolidation_jobs")
    op.drop_index("ix_consolidation_jobs_status_id", table_name="consolidation_jobs")
    with op.batch_alter_table("consolidation_jobs") as jobs:
        for column in (
            "project_paused",
            "retry_of_id",
            "cancel_reason",
            "cancelled_by",
            "cancel_requested_at",
        ):
            jobs.drop_column(column)
