"""Consolidation jobs: the manual trigger, and reading jobs."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from omoi_os.api.deps import Principal, Runtime
from omoi_os.api.errors import error_responses
from omoi_os.api.paging import Limit, Offset
from omoi_os.api.route_class import ConsolidationRoute, get_and_head
from omoi_os.api.schemas import JobCancel, JobCreate, JobOut, JobPage
from omoi_os.models import JobStatus, TriggerType
from omoi_os.services.consolidation.cancellation import Cancelled
from omoi_os.services.consolidation.job_service import JobPage as Jobs

router = APIRouter(tags=["consolidation jobs"], route_class=ConsolidationRoute)

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A consolidation job's id")]
StatusFilter = Annotated[JobStatus | None, Query(alias="status")]

# OpenAPI links: what a client (and a stateful test) can do next with a job it got.
_NEXT_WITH_THE_JOB = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (("cancel", "cancel_job"), ("retry", "retry_job"))
}


@router.post(
    "/projects/{project_id}/consolidation-jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={202: {"links": _NEXT_WITH_THE_JOB}, **error_responses(400, 415, 404, 409)},
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
    return JobOut.model_validate(runtime.jobs.get_sync(job_id))


@get_and_head(router, "/consolidation-jobs", response_model=JobPage)
def list_jobs(
    runtime: Runtime,
    status_filter: StatusFilter = None,
    trigger_type: TriggerType | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobPage:
    """Consolidation jobs of every project, newest first."""
    page = runtime.jobs.list_sync(
        status=status_filter, trigger_type=trigger_type, limit=limit, offset=offset
    )
    return _job_page(page)


@get_and_head(
    router, "/consolidation-jobs/{job_id}", response_model=JobOut, responses=error_responses(404)
)
def read_job(job_id: JobId, runtime: Runtime) -> JobOut:
    """Read one consolidation job."""
    return JobOut.model_validate(runtime.jobs.get_sync(job_id))


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
    page = runtime.jobs.list_sync(
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


@router.post(
    "/consolidation-jobs/{job_id}/cancel",
    operation_id="cancel_job",
    response_model=JobOut,
    responses={
        202: {"description": "Running: it stops at the end of its batch", "model": JobOut},
        **error_responses(400, 415, 404, 409),
    },
)
def cancel_job(
    job_id: JobId,
    principal: Principal,
    runtime: Runtime,
    response: Response,
    body: JobCancel | None = None,
) -> JobOut:
    """Cancel a job. A pending one is cancelled at once (200; no worker will run it). A
    running one stops at the end of its current batch and then ends `cancelled` (202;
    the batches done stay, a later job does the rest). 409 (naming its status) for a
    job that has finished. Who and why are recorded on the job."""
    reason = body.reason if body is not None else None
    job, how = runtime.jobs.cancel_sync(job_id, by=principal, reason=reason)
    if how is Cancelled.STOPPING:
        response.status_code = status.HTTP_202_ACCEPTED
    return JobOut.model_validate(job)


@router.post(
    "/consolidation-jobs/{job_id}/retry",
    operation_id="retry_job",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=error_responses(404, 409),
)
def retry_job(job_id: JobId, principal: Principal, runtime: Runtime) -> JobOut:
    """Retry a `failed` or `timed_out` job: a new job with its project and scope, whose
    `retry_of_id` names it (and the failed job's `retried_by_id` names the new one). A
    failure is retried once: 409 naming the retry (`retry_job_id`) for a job that has
    one, concurrent retries included. 409 too for a job in another status (naming it),
    an inactive project, or a project with an active job (`active_job_id`)."""
    new_job_id = runtime.triggers.retry_sync(job_id, triggered_by=principal)
    return JobOut.model_validate(runtime.jobs.get_sync(new_job_id))
