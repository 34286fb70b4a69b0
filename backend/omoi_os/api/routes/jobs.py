"""Consolidation jobs: the manual trigger, and reading jobs."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from omoi_os.api.deps import Principal, Runtime
from omoi_os.api.errors import ConsolidationRoute, error_responses, get_and_head
from omoi_os.api.paging import Limit, Offset
from omoi_os.api.schemas import JobCreate, JobOut, JobPage
from omoi_os.models import JobStatus, TriggerType
from omoi_os.services.consolidation.job_service import JobPage as Jobs

router = APIRouter(tags=["consolidation jobs"], route_class=ConsolidationRoute)

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A consolidation job's id")]
StatusFilter = Annotated[JobStatus | None, Query(alias="status")]


@router.post(
    "/projects/{project_id}/consolidation-jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=error_responses(400, 415, 404, 409),
)
def trigger_consolidation(
    project_id: uuid.UUID, principal: Principal, runtime: Runtime, body: JobCreate | None = None
) -> JobOut:
    """Trigger a consolidation now (ignores the cooldown, and the project's pause: the
    job says `project_paused`). 409 if the project is inactive or already has a
    pending or running job (`active_job_id` names it)."""
    scope = body.scope if body is not None else None
    job_id = runtime.triggers.trigger_consolidation_sync(
        project_id, TriggerType.MANUAL, scope, triggered_by=principal
    )
    return JobOut.model_validate(runtime.jobs.get(job_id))


@get_and_head(router, "/consolidation-jobs", response_model=JobPage)
def list_jobs(
    runtime: Runtime,
    status_filter: StatusFilter = None,
    trigger_type: TriggerType | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobPage:
    """Consolidation jobs of every project, newest first."""
    page = runtime.jobs.list(
        status=status_filter, trigger_type=trigger_type, limit=limit, offset=offset
    )
    return _job_page(page)


@get_and_head(
    router, "/consolidation-jobs/{job_id}", response_model=JobOut, responses=error_responses(404)
)
def read_job(job_id: JobId, runtime: Runtime) -> JobOut:
    """Read one consolidation job."""
    return JobOut.model_validate(runtime.jobs.get(job_id))


@get_and_head(
    router,
    "/projects/{project_id}/consolidation-jobs",
    response_model=JobPage,
    responses=error_responses(404),
)
def list_project_jobs(
    project_id: uuid.UUID,
    runtime: Runtime,
    status_filter: StatusFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobPage:
    """A project's consolidation jobs, newest first."""
    page = runtime.jobs.list(
        project_id=project_id, status=status_filter, limit=limit, offset=offset
    )
    return _job_page(page)


def _job_page(page: Jobs) -> JobPage:
    return JobPage(
        items=[JobOut.model_validate(job) for job in page.items],
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
    )
