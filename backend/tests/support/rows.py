"""Reading back what the database holds, outside the code under test: each read is
its own session, so it sees only what committed."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select

from omoi_os.models import ConsolidationJob, ConsolidationTick, Project, QueuedTask, TaskMemory
from omoi_os.services.database import DatabaseService
from tests.support.factories import Factories


def row_counts(factories: Factories) -> tuple[int, int, int, int]:
    """(projects, memories, jobs, queue tasks): what a request that writes nothing leaves."""
    return (
        factories.count(Project),
        factories.count(TaskMemory),
        factories.count(ConsolidationJob),
        factories.count(QueuedTask),
    )


def stored_jobs(db: DatabaseService, project_id: uuid.UUID | None = None) -> list[ConsolidationJob]:
    """Every job (or every job of `project_id`), oldest first."""
    with db.read() as session:
        statement = select(ConsolidationJob).order_by(ConsolidationJob.id)
        if project_id is not None:
            statement = statement.where(ConsolidationJob.project_id == project_id)
        return list(session.scalars(statement))


def stored_job(db: DatabaseService, job_id: int) -> ConsolidationJob:
    """The job `job_id` (AssertionError if there is none)."""
    with db.read() as session:
        job = session.get(ConsolidationJob, job_id)
        assert job is not None
        return job


def stored_memories(db: DatabaseService) -> list[TaskMemory]:
    """Every memory, oldest first."""
    with db.read() as session:
        return list(session.scalars(select(TaskMemory).order_by(TaskMemory.id)))


def stored_ticks(db: DatabaseService) -> list[tuple[datetime, int]]:
    """(scheduled_for, jobs_created) of every recorded tick, oldest first."""
    with db.read() as session:
        statement = select(ConsolidationTick).order_by(ConsolidationTick.scheduled_for)
        return [(tick.scheduled_for, tick.jobs_created) for tick in session.scalars(statement)]
