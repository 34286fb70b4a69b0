"""Writing a memory over HTTP (optional: a host that writes memories with its own code
and `runtime.memories.add` leaves it out, `consolidation_router(memory_writes=False)`)."""

import uuid

from fastapi import APIRouter, status

from omoi_os.api.deps import Runtime
from omoi_os.api.errors import error_responses
from omoi_os.api.route_class import ConsolidationRoute
from omoi_os.api.schemas import MemoryCreate, MemoryCreated, MemoryOut
from omoi_os.services.memory import NewMemory

router = APIRouter(tags=["memories"], route_class=ConsolidationRoute)


@router.post(
    "/projects/{project_id}/memories",
    status_code=status.HTTP_201_CREATED,
    response_model=MemoryCreated,
    responses=error_responses(400, 415, 404),
)
def create_memory(project_id: uuid.UUID, body: MemoryCreate, runtime: Runtime) -> MemoryCreated:
    """Store a memory. It commits first; then the threshold check runs, and the answer
    says whether it started a consolidation job. A failing check never loses the memory."""
    new = NewMemory(
        memory_type=body.memory_type,
        execution_summary=body.execution_summary,
        success=body.success,
        reused_count=body.reused_count,
        learned_at=body.learned_at,
        metadata=body.metadata,
    )
    stored = runtime.memories.create_memory_sync(project_id, new)
    return MemoryCreated(
        memory=MemoryOut.model_validate(stored.memory),
        consolidation_job_id=stored.triggered_job_id,
        threshold_check_failed=stored.threshold_check_failed,
    )
