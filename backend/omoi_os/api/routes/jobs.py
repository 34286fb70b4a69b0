"""Consolidation jobs: the manual trigger, and reading jobs."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from omoi_os.api.auth import Principal
from omoi_os.api.deps import AppServices
from omoi_os.api.errors import error_responses
from omoi_os.api.schemas import JobCreate, JobOut, JobPage
from omoi_os.models import JobStatus, TriggerType
from omoi_os.services.consolidation import jobs
from omoi_os.services.database import read_session

router = APIRouter(tags=["consolidation jobs"])

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A consolidation job's id")]
MAX_PAGE = 200


@router.post(
    "/projects/{project_id}/consolidation-jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=error_responses(400, 404, 409),
)
def trigger_consolidation(
    project_id: uuid.UUID,
    principal: Principal,
    services: AppServices,
    body: JobCreate | None = None,
) -> JobOut:
    """Trigger a consolidation now (ignores the cooldown). 409 if the project is
    inactive or already has a pending or running job (`active_job_id` names it)."""
    scope = body.scope if body is not None else None
    job_id = services.triggers.trigger_consolidation_sync(
        project_id, TriggerType.MANUAL, scope, triggered_by=principal
    )
    return read_job(job_id, services)


@router.get("/consolidation-jobs/{job_id}", response_model=JobOut, responses=error_responses(404))
def read_job(job_id: JobId, services: AppServices) -> JobOut:
    """Read one consolidation job."""
    with read_session(services.db.session_factory) as session:
        return JobOut.model_validate(jobs.get_job(session, job_id))


@router.get(
    "/projects/{project_id}/consolidation-jobs",
    response_model=JobPage,
    responses=error_responses(404),
)
def list_project_jobs(
    project_id: uuid.UUID,
    services: AppServices,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobPage:
    """A project's consolidation jobs, newest first."""
    services.projects.get(project_id)  # 404 for an unknown project, not an empty page
    with read_session(services.db.session_factory) as session:
        page = jobs.list_jobs(
            session, project_id, status=status_filter, limit=limit + 1, offset=offset
        )
    items = [JobOut.model_validate(job) for job in page[:limit]]
    return JobPage(
        items=items,
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(page) > limit else None,
    )
