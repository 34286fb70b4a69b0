"""Factory helpers with overridable defaults; each writes in its own transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from omoi_os.models import (
    ConsolidationJob,
    JobStatus,
    MemoryTier,
    MemoryType,
    Project,
    QueuedTask,
    TaskMemory,
    TriggerType,
)
from omoi_os.services.database import DatabaseService

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
# The job that consolidated the memories `decided` describes.
DECIDING_JOB_ID = 7


@dataclass
class Factories:
    db: DatabaseService

    def project(self, **overrides: Any) -> Project:
        values: dict[str, Any] = {"name": "project", "is_active": True, "created_at": T0}
        project = Project(**(values | overrides))
        with self.db.transaction() as session:
            session.add(project)
        return project

    def projects(
        self, count: int, *, is_active: bool = True, new_memories: int = 0
    ) -> list[uuid.UUID]:
        """Many projects in one statement (for fan-out tests), each with `new_memories`
        unconsolidated memories (a scheduled tick passes over projects without work)."""
        ids = [uuid.uuid4() for _ in range(count)]
        rows = [
            {"id": i, "name": f"p{n}", "is_active": is_active, "created_at": T0}
            for n, i in enumerate(ids)
        ]
        with self.db.transaction() as session:
            session.execute(insert(Project), rows)
            if new_memories:
                memories = [_memory_row(i) for i in ids for _ in range(new_memories)]
                session.execute(insert(TaskMemory), memories)
        return ids

    def memories(self, project_id: uuid.UUID, count: int, **overrides: Any) -> None:
        """`count` unconsolidated memories written directly (no threshold check)."""
        row = _memory_row(project_id) | overrides
        with self.db.transaction() as session:
            session.execute(insert(TaskMemory), [row] * count)

    def memory(self, project_id: uuid.UUID, **overrides: Any) -> int:
        """One memory written directly (no threshold check); returns its id."""
        row = _memory_row(project_id) | overrides
        with self.db.transaction() as session:
            return int(
                session.execute(insert(TaskMemory).returning(TaskMemory.id), row).scalar_one()
            )

    def job(self, project_id: uuid.UUID, **overrides: Any) -> ConsolidationJob:
        values: dict[str, Any] = {
            "project_id": project_id,
            "trigger_type": TriggerType.MANUAL,
            "status": JobStatus.PENDING,
            "triggered_by": "tests",
            "scope": {},
            "created_at": T0,
        }
        job = ConsolidationJob(**(values | overrides))
        with self.db.transaction() as session:
            session.add(job)
        return job

    def count(self, model: type[Any], *criteria: Any) -> int:
        with self.db.get_session() as session:
            return session.scalar(select(func.count()).select_from(model).where(*criteria)) or 0

    def queue_rows(self) -> list[QueuedTask]:
        with self.db.get_session() as session:
            return list(session.scalars(select(QueuedTask).order_by(QueuedTask.id)))


def _memory_row(project_id: uuid.UUID) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "memory_type": MemoryType.LEARNING,
        "execution_summary": "learned something",
        "success": True,
        "reused_count": 0,
        "learned_at": T0 - timedelta(days=1),
        "is_consolidated": False,
    }


def decided(tier: MemoryTier, score: float, days_old: int, **overrides: Any) -> dict[str, Any]:
    """A consolidated memory's columns (for Factories.memory): learned `days_old` days
    before T0, given `tier` and `score` by job DECIDING_JOB_ID at T0."""
    return {
        "learned_at": T0 - timedelta(days=days_old),
        "is_consolidated": True,
        "consolidated_at": T0,
        "consolidation_job_id": DECIDING_JOB_ID,
        "tier": tier,
        "consolidation_score": score,
        "tier_expires_at": T0 + timedelta(days=30),
    } | overrides
