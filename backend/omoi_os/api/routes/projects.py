"""Projects and their memories."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from omoi_os.api.deps import Principal, Runtime
from omoi_os.api.errors import error_responses
from omoi_os.api.paging import Limit, Offset
from omoi_os.api.route_class import ConsolidationRoute, get_and_head
from omoi_os.api.schemas import (
    PauseRequest,
    ProjectCreate,
    ProjectOut,
    ProjectPage,
    ProjectUpdate,
)
from omoi_os.models import Project
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.services.projects import KEEP

router = APIRouter(prefix="/projects", tags=["projects"], route_class=ConsolidationRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectOut,
    responses=error_responses(400, 415, 409),
)
def create_project(body: ProjectCreate, runtime: Runtime) -> ProjectOut:
    """Create a project, keyed by the host's own `external_key` if given (409 if another
    project has that key)."""
    project = runtime.projects.create_sync(
        body.name, is_active=body.is_active, external_key=body.external_key
    )
    return _project_out(project, runtime)


@get_and_head(router, "", response_model=ProjectPage)
def list_projects(
    runtime: Runtime,
    active: Annotated[bool | None, Query(description="Only active (or inactive) ones")] = None,
    paused: Annotated[bool | None, Query(description="Only paused (or running) ones")] = None,
    external_key: Annotated[
        str | None, Query(max_length=200, description="Only the one the host keys so")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ProjectPage:
    """Projects, in a stable order (by id)."""
    page = runtime.projects.list_sync(
        active=active, paused=paused, external_key=external_key, limit=limit, offset=offset
    )
    return ProjectPage(
        items=[_project_out(project, runtime) for project in page.items],
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
    )


@get_and_head(router, "/{project_id}", response_model=ProjectOut, responses=error_responses(404))
def get_project(project_id: uuid.UUID, runtime: Runtime) -> ProjectOut:
    """Read a project."""
    return _project_out(runtime.projects.get_sync(project_id), runtime)


@router.patch("/{project_id}", response_model=ProjectOut, responses=error_responses(400, 415, 404))
def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, principal: Principal, runtime: Runtime
) -> ProjectOut:
    """Rename a project, (de)activate it, or set its own threshold and cooldown (null:
    the global setting again). Inactive projects are not consolidated: deactivating
    cancels the project's pending job, and stops its running one at the end of its
    batch (the job records who, and why)."""
    given = body.model_fields_set
    project = runtime.projects.update_sync(
        project_id,
        name=body.name,
        is_active=body.is_active,
        consolidation_threshold=(
            body.consolidation_threshold if "consolidation_threshold" in given else KEEP
        ),
        consolidation_cooldown=(
            body.consolidation_cooldown if "consolidation_cooldown" in given else KEEP
        ),
        by=principal,
    )
    return _project_out(project, runtime)


@router.put(
    "/{project_id}/pause", response_model=ProjectOut, responses=error_responses(400, 415, 404)
)
def pause_project(
    project_id: uuid.UUID, principal: Principal, runtime: Runtime, body: PauseRequest | None = None
) -> ProjectOut:
    """Pause a project: no scheduled or threshold job until it is resumed (a threshold
    crossing meanwhile is dropped); a manual trigger still works. Pausing a paused
    project keeps its pause."""
    reason = body.reason if body is not None else None
    project = runtime.projects.pause_sync(project_id, by=principal, reason=reason)
    return _project_out(project, runtime)


@router.delete(
    "/{project_id}/pause", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404)
)
def resume_project(project_id: uuid.UUID, runtime: Runtime) -> None:
    """Resume a project (also when it is not paused). It starts nothing by itself."""
    runtime.projects.resume_sync(project_id)


def _project_out(project: Project, runtime: ConsolidationRuntime) -> ProjectOut:
    return ProjectOut.of(project, runtime.projects.effective(project))
