"""Writing task memories, and the threshold check that follows each write.

The memory commits first, in its own transaction; the threshold check runs after,
in another. A failing check is logged, never raised into the write: the memory that
crossed the threshold is never lost because a trigger failed (invariant 5,
docs/invariants.md). A host that writes memories with its own code calls
`after_write` (or `after_write_async`) once its write has committed, and gets the same
guarantee.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from omoi_os.clock import Clock, utc_now
from omoi_os.errors import ProjectNotFound
from omoi_os.models import MemoryType
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.store import memories as memory_store
from omoi_os.store import projects as project_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewMemory:
    memory_type: MemoryType
    execution_summary: str
    success: bool = True
    reused_count: int = 0
    learned_at: datetime | None = None


@dataclass(frozen=True)
class ThresholdCheck:
    """What the check after a memory write did: the job it started, or that it failed
    (logged; the memory stays written)."""

    triggered_job_id: int | None
    failed: bool = False


@dataclass(frozen=True)
class StoredMemory:
    """The committed memory (a row with every column), and the job its write started."""

    memory: Any
    triggered_job_id: int | None
    threshold_check_failed: bool = False


class MemoryService:
    def __init__(
        self, db: DatabaseService, triggers: ConsolidationTriggerService, *, clock: Clock = utc_now
    ) -> None:
        self._db = db
        self._triggers = triggers
        self._clock = clock

    def create_memory(self, project_id: uuid.UUID, memory: NewMemory) -> StoredMemory:
        """Store a memory, then run the threshold check. Raises ProjectNotFound."""
        stored = self._insert(project_id, memory)
        check = self.after_write(project_id)
        return StoredMemory(stored, check.triggered_job_id, threshold_check_failed=check.failed)

    def after_write(self, project_id: uuid.UUID | str) -> ThresholdCheck:
        """The threshold check, after a memory write of `project_id` committed. Never
        raises: a failure is logged and reported, and the memory stays written."""
        try:
            return ThresholdCheck(self._triggers.check_threshold_triggers_sync(project_id))
        except Exception:
            logger.exception(
                "threshold check after a memory write of project %s failed; the memory is stored",
                project_id,
                extra={"action": "threshold_check_failed", "project_id": str(project_id)},
            )
            return ThresholdCheck(None, failed=True)

    async def after_write_async(self, project_id: uuid.UUID | str) -> ThresholdCheck:
        """after_write, from async code: the check runs off the event loop."""
        return await asyncio.to_thread(self.after_write, project_id)

    def _insert(self, project_id: uuid.UUID, memory: NewMemory) -> Any:
        with self._db.transaction() as session:
            if not project_store.project_exists(session, project_id):
                raise ProjectNotFound(project_id)
            return memory_store.insert_memory(
                session,
                project_id=project_id,
                memory_type=memory.memory_type,
                execution_summary=memory.execution_summary,
                success=memory.success,
                reused_count=memory.reused_count,
                learned_at=memory.learned_at or self._clock(),
            )
