"""Writing task memories, and the threshold check that follows each write.

Two ways to write one. `create_memory` commits the memory in a transaction of its
own, then runs the check. `add(session, …)` adds it inside the host's own
transaction (its `AsyncSession`, or a `Session` with `add_sync`): it commits or rolls
back with the host's own write, and once the host has committed it calls
`after_write(project_id)`.

The check always runs after the memory committed, in a transaction of its own. A
failing check is logged, never raised into the write: the memory that crossed the
threshold is never lost because a trigger failed (invariant 5, docs/invariants.md).

Every method's plain name is awaitable; its synchronous twin ends in `_sync`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.errors import MemoryNotFound, ProjectNotFound
from omoi_os.models import MemoryTier, MemoryType
from omoi_os.services.awaitable import awaitable
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.services.paging import Page, check_page
from omoi_os.store import memories as memory_store
from omoi_os.store import projects as project_store
from omoi_os.store.memories import MemoryOrder
from omoi_os.store.sql import Bound

if TYPE_CHECKING:  # SQLAlchemy's asyncio needs greenlet: only an async host has it
    from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewMemory:
    """A memory to write: what the agent learned, and the host's own `metadata` (JSON,
    stored as given and returned with the memory, e.g. its own row id to map back)."""

    memory_type: MemoryType
    execution_summary: str
    success: bool = True
    reused_count: int = 0
    learned_at: datetime | None = None
    metadata: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        """ValueError naming the field, for a memory that cannot be stored."""
        try:
            object.__setattr__(self, "memory_type", MemoryType(self.memory_type))
        except ValueError:
            kinds = ", ".join(kind.value for kind in MemoryType)
            raise ValueError(f"memory_type {self.memory_type!r} is not one of {kinds}") from None
        if not isinstance(self.execution_summary, str) or not self.execution_summary.strip():
            raise ValueError("execution_summary must be a non-blank string")
        if not isinstance(self.reused_count, int) or self.reused_count < 0:
            raise ValueError(f"reused_count {self.reused_count!r} must be a whole number >= 0")
        if self.learned_at is not None and self.learned_at.tzinfo is None:
            raise ValueError(f"learned_at {self.learned_at!r} has no time zone")
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise ValueError(f"metadata must be a JSON object (a dict), not {self.metadata!r}")


@dataclass(frozen=True)
class ThresholdCheck:
    """What the check after a memory write did: the job it started (or None), that the
    project does not exist (`unknown_project`: nothing to retry), or that it failed
    (`failed`: logged with its cause; the memory stays written)."""

    triggered_job_id: int | None
    failed: bool = False
    unknown_project: bool = False


@dataclass(frozen=True)
class StoredMemory:
    """The committed memory (a row with every column), and the job its write started."""

    memory: Any
    triggered_job_id: int | None
    threshold_check_failed: bool = False


@dataclass(frozen=True)
class MemoryView:
    """A memory as a reader sees it: what the agent wrote, and what consolidation
    decided (its score, tier and when the tier may next change; None until then)."""

    id: int
    project_id: uuid.UUID
    memory_type: MemoryType
    execution_summary: str
    success: bool
    reused_count: int
    learned_at: datetime
    metadata: dict[str, JsonValue] | None  # the host's own reference, as it gave it
    is_consolidated: bool
    consolidated_at: datetime | None
    consolidation_job_id: int | None
    score: float | None
    tier: MemoryTier | None
    tier_expires_at: datetime | None


class MemoryService:
    """Memories: write one (in its own transaction, or inside the host's), and the
    threshold check after a write. Every method is awaitable; its synchronous twin
    ends in `_sync`."""

    def __init__(
        self, db: DatabaseService, triggers: ConsolidationTriggerService, *, clock: Clock = utc_now
    ) -> None:
        self._db = db
        self._triggers = triggers
        self._clock = clock

    def create_memory_sync(self, project_id: uuid.UUID, memory: NewMemory) -> StoredMemory:
        """Store a memory in a transaction of its own, then run the threshold check.
        Raises ProjectNotFound."""
        stored = self._insert(project_id, memory)
        check = self.after_write_sync(project_id)
        return StoredMemory(stored, check.triggered_job_id, threshold_check_failed=check.failed)

    async def add(self, session: AsyncSession, project_id: uuid.UUID, memory: NewMemory) -> int:
        """Add a memory inside the host's own `AsyncSession` transaction; returns its id.
        It commits or rolls back with the host's write; once committed, call
        `after_write(project_id)`. Raises ProjectNotFound (nothing added; the host's
        transaction is still usable)."""
        statement, options = self._adding(project_id, memory)
        result = await session.execute(statement, execution_options=options)
        return self._added(result.scalar_one_or_none(), project_id)

    def add_sync(self, session: Session, project_id: uuid.UUID, memory: NewMemory) -> int:
        """`add`, inside the host's own synchronous `Session`."""
        statement, options = self._adding(project_id, memory)
        result = session.execute(statement, execution_options=options)
        return self._added(result.scalar_one_or_none(), project_id)

    def after_write_sync(self, project_id: uuid.UUID | str) -> ThresholdCheck:
        """The threshold check, after a memory write of `project_id` committed. Never
        raises: an unknown project and a failure are reported (the latter logged), and
        the memory stays written."""
        try:
            return ThresholdCheck(self._triggers.check_threshold_triggers_sync(project_id))
        except ProjectNotFound:
            logger.warning(
                "threshold check after a memory write: project %s does not exist",
                project_id,
                extra={"action": "threshold_check_unknown_project", "project_id": str(project_id)},
            )
            return ThresholdCheck(None, unknown_project=True)
        except Exception:
            logger.exception(
                "threshold check after a memory write of project %s failed; the memory is stored",
                project_id,
                extra={"action": "threshold_check_failed", "project_id": str(project_id)},
            )
            return ThresholdCheck(None, failed=True)

    def _adding(self, project_id: uuid.UUID, memory: NewMemory) -> Bound:
        """The host-session insert, and the options that put it in our schema."""
        statement = memory_store.insert_memory_of_existing_project(self._values(project_id, memory))
        return Bound(statement, {"schema_translate_map": self._db.schema_translate_map})

    @staticmethod
    def _added(memory_id: int | None, project_id: uuid.UUID) -> int:
        if memory_id is None:
            raise ProjectNotFound(project_id)
        return memory_id

    def _insert(self, project_id: uuid.UUID, memory: NewMemory) -> Any:
        with self._db.transaction() as session:
            if not project_store.project_exists(session, project_id):
                raise ProjectNotFound(project_id)
            return memory_store.insert_memory_values(session, self._values(project_id, memory))

    def _values(self, project_id: uuid.UUID, memory: NewMemory) -> dict[str, Any]:
        """`memory`'s columns (learned now, unless it says when)."""
        return memory_store.new_memory_values(
            project_id,
            memory_type=memory.memory_type,
            execution_summary=memory.execution_summary,
            success=memory.success,
            reused_count=memory.reused_count,
            learned_at=memory.learned_at or self._clock(),
            metadata=memory.metadata,
        )

    # --- reading what consolidation decided -------------------------------------------

    def list_sync(
        self,
        project_id: uuid.UUID | str,
        *,
        tier: MemoryTier | None = None,
        consolidated: bool | None = None,
        order: MemoryOrder = "score",
        limit: int = 50,
        offset: int = 0,
    ) -> Page[MemoryView]:
        """A page of the project's memories, best first (`order="score"`: by score,
        those not consolidated yet last) or newest first (`"learned_at"`); only those of
        `tier`, and only the consolidated (or unconsolidated) ones, if given. Raises
        ProjectNotFound; ValueError, naming the argument, for a bad tier, order or page."""
        tier = _checked_listing(tier, order, limit, offset)
        project = project_store.parse_project_id(project_id)
        statement, parameters = memory_store.memories_page(
            project,
            tier=tier,
            consolidated=consolidated,
            order=order,
            limit=limit + 1,
            offset=offset,
        )
        with self._db.single_statement(read_only=True) as connection:
            rows = connection.execute(statement, parameters).all()
            # Only an empty page can be an unknown project's: a page with memories
            # costs no second statement.
            if not rows and not project_store.project_exists(connection, project):
                raise ProjectNotFound(project_id)
        return Page.cut([MemoryView(**row._mapping) for row in rows], limit=limit, offset=offset)

    def get_sync(self, memory_id: int) -> MemoryView:
        """The memory as a reader sees it; MemoryNotFound if there is none."""
        if not 1 <= memory_id <= MAX_MEMORY_ID:  # no such row can exist: nothing to ask
            raise MemoryNotFound(memory_id)
        with self._db.single_statement(read_only=True) as connection:
            row = connection.execute(*memory_store.memory_by_id(memory_id)).one_or_none()
        if row is None:
            raise MemoryNotFound(memory_id)
        return MemoryView(**row._mapping)

    create_memory = awaitable(create_memory_sync)
    after_write = awaitable(after_write_sync)
    list = awaitable(list_sync)
    get = awaitable(get_sync)


# Memory ids are BIGINT: a larger number names no memory (and cannot be bound).
MAX_MEMORY_ID = 2**63 - 1


def _checked_listing(
    tier: MemoryTier | str | None, order: str, limit: int, offset: int
) -> MemoryTier | None:
    """The listing's tier as a MemoryTier; ValueError, naming the argument, for a tier
    or order that does not exist or a page out of bounds."""
    if order not in memory_store.MEMORY_ORDERS:
        raise ValueError(
            f"order must be one of {', '.join(memory_store.MEMORY_ORDERS)}, not {order!r}"
        )
    check_page(limit, offset)
    if tier is None:
        return None
    try:
        return MemoryTier(tier)
    except ValueError:
        tiers = ", ".join(member.value for member in MemoryTier)
        raise ValueError(f"tier must be one of {tiers}, not {tier!r}") from None
