"""Reading memories back: what the agents wrote and what consolidation decided (the
write itself is a project's route, api/routes/projects.py)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from omoi_os.api.deps import Runtime
from omoi_os.api.errors import error_responses
from omoi_os.api.paging import Limit, Offset
from omoi_os.api.route_class import ConsolidationRoute, get_and_head
from omoi_os.api.schemas import MemoryDetail, MemoryItem, MemoryPage
from omoi_os.models import MemoryTier
from omoi_os.services.memory import MAX_MEMORY_ID
from omoi_os.store.memories import MemoryOrder

router = APIRouter(tags=["memories"], route_class=ConsolidationRoute)

MemoryId = Annotated[int, Path(ge=1, le=MAX_MEMORY_ID, description="A memory's id")]


@get_and_head(
    router,
    "/projects/{project_id}/memories",
    response_model=MemoryPage,
    responses=error_responses(404),
)
def list_memories(
    project_id: uuid.UUID,
    runtime: Runtime,
    tier: Annotated[MemoryTier | None, Query(description="Only memories of this tier")] = None,
    consolidated: Annotated[
        bool | None, Query(description="Only consolidated (or unconsolidated) ones")
    ] = None,
    order: Annotated[
        MemoryOrder,
        Query(
            description="score: best first (consolidation_score, then id, descending; "
            "memories not consolidated yet last, newest first); learned_at: newest first"
        ),
    ] = "score",
    limit: Limit = 50,
    offset: Offset = 0,
) -> MemoryPage:
    """A project's memories with what consolidation decided (tier, score, when the tier
    may next change), best or newest first."""
    page = runtime.memories.list_sync(
        project_id, tier=tier, consolidated=consolidated, order=order, limit=limit, offset=offset
    )
    return MemoryPage(
        items=[MemoryItem.model_validate(memory) for memory in page.items],
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
    )


@get_and_head(
    router, "/memories/{memory_id}", response_model=MemoryDetail, responses=error_responses(404)
)
def read_memory(memory_id: MemoryId, runtime: Runtime) -> MemoryDetail:
    """Read one memory, with what consolidation decided."""
    return MemoryDetail.model_validate(runtime.memories.get_sync(memory_id))
