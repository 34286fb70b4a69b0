"""Writing task memories, and the threshold check that follows each write.

The memory commits first, in its own transaction; the threshold check runs after,
in another. A failing check is logged, never raised into the write: the memory
that crossed the threshold is never lost because a trigger failed (invariant 5).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.models import MemoryType, Project, TaskMemory
from omoi_os.services.consolidation.errors import ProjectNotFound
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService, SessionFactory, as_session_factory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewMemory:
    memory_type: MemoryType
    execution_summary: str
    success: bool = True
    reused_count: int = 0
    learned_at: datetime | None = None


@dataclass(frozen=True)
class StoredMemory:
    """The committed memory, and the job its write started (if it started one)."""

    memory: TaskMemory
    triggered_job_id: int | None
    threshold_check_failed: bool = False


class MemoryService:
    def __init__(
        self,
        db: Session | DatabaseService | SessionFactory | Engine,
        triggers: ConsolidationTriggerService,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = as_session_factory(db)
        self._triggers = triggers
        self._clock = clock

    async def create_memory(self, project_id: uuid.UUID, memory: NewMemory) -> StoredMemory:
        """Async form of create_memory_sync (runs off the event loop)."""
        return await asyncio.to_thread(self.create_memory_sync, project_id, memory)

    def create_memory_sync(self, project_id: uuid.UUID, memory: NewMemory) -> StoredMemory:
        """Store a memory, then run the threshold check. Raises ProjectNotFound."""
        stored = self._insert(project_id, memory)
        try:
            job_id = self._triggers.check_threshold_triggers_sync(project_id)
        except Exception:
            logger.exception(
                "threshold check after memory %d of project %s failed; the memory is stored",
                stored.id,
                project_id,
            )
            return StoredMemory(stored, None, threshold_check_failed=True)
        return StoredMemory(stored, job_id)

    def _insert(self, project_id: uuid.UUID, memory: NewMemory) -> TaskMemory:
        with self._sessions.begin() as session:
            if session.scalar(select(Project.id).where(Project.id == project_id)) is None:
                raise ProjectNotFound(project_id)
            row = TaskMemory(
                project_id=project_id,
                memory_type=memory.memory_type,
                execution_summary=memory.execution_summary,
                success=memory.success,
                reused_count=memory.reused_count,
                learned_at=memory.learned_at or self._clock(),
                is_consolidated=False,
            )
            session.add(row)
        return row
