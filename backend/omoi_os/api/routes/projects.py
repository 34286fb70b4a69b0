"""Projects and their memories."""

import uuid

from fastapi import APIRouter, status

from omoi_os.api.deps import Principal, Runtime
from omoi_os.api.errors import ConsolidationRoute, error_responses, get_and_head
from omoi_os.api.schemas import (
    MemoryCreate,
    MemoryCreated,
    MemoryOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
)
from omoi_os.services.memory import NewMemory

router = APIRouter(prefix="/projects", tags=["projects"], route_class=ConsolidationRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectOut,
    responses=error_responses(400, 415),
)
def create_project(body: ProjectCreate, runtime: Runtime) -> ProjectOut:
    """Create a project."""
    project = runtime.projects.create(body.name, is_active=body.is_active)
    return ProjectOut.model_validate(project)


@get_and_head(router, "/{project_id}", response_model=ProjectOut, responses=error_responses(404))
def get_project(project_id: uuid.UUID, runtime: Runtime) -> ProjectOut:
    """Read a project."""
    return ProjectOut.model_validate(runtime.projects.get(project_id))


@router.patch("/{project_id}", response_model=ProjectOut, responses=error_responses(400, 415, 404))
def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, principal: Principal, runtime: Runtime
) -> ProjectOut:
    """Rename a project, or (de)activate it. Inactive projects are not consolidated:
    deactivating cancels the project's pending job, and stops its running one at the
    end of its batch (the job records who, and why)."""
    project = runtime.projects.update(
        project_id, name=body.name, is_active=body.is_active, by=principal
    )
    return ProjectOut.model_validate(project)


@router.post(
    "/{project_id}/memories",
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
    )
    stored = runtime.memories.create_memory(project_id, new)
    return MemoryCreated(
        memory=MemoryOut.model_validate(stored.memory),
        consolidation_job_id=stored.triggered_job_id,
        threshold_check_failed=stored.threshold_check_failed,
    )
