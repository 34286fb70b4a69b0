"""Domain errors of consolidation. Raised by services; the API maps them to HTTP in
one place (404 for lookups, 409 for conflicts)."""

from __future__ import annotations

import uuid


class ConsolidationError(Exception):
    """Base of the errors a trigger can answer with."""


class ProjectNotFound(ConsolidationError, LookupError):
    """No project has this id (HTTP 404)."""

    def __init__(self, project_id: uuid.UUID | str) -> None:
        super().__init__(f"project {project_id} does not exist")
        self.project_id = project_id


class ProjectKeyTaken(ConsolidationError):
    """Another project is already keyed by this external key (keys are unique; use
    `projects.ensure(key)` to get that project instead)."""

    def __init__(self, external_key: str, project_id: uuid.UUID | None) -> None:
        super().__init__(f"external key {external_key!r} is already project {project_id}'s")
        self.external_key = external_key
        self.project_id = project_id


class ProjectInactive(ConsolidationError):
    """The project is inactive. `active_job_id` names a job it still has: one that was
    running when it was deactivated, stopping at the end of its batch."""

    def __init__(self, project_id: uuid.UUID, active_job_id: int | None = None) -> None:
        still = "" if active_job_id is None else f"; its job {active_job_id} is stopping"
        super().__init__(f"project {project_id} is inactive{still}")
        self.project_id = project_id
        self.active_job_id = active_job_id


class ConsolidationAlreadyActive(ConsolidationError):
    """The project already has a pending or running job (one at a time, by design)."""

    def __init__(self, project_id: uuid.UUID, active_job_id: int) -> None:
        super().__init__(
            f"project {project_id} already has active consolidation job {active_job_id}"
        )
        self.project_id = project_id
        self.active_job_id = active_job_id


class JobNotFound(ConsolidationError, LookupError):
    """No consolidation job has this id (HTTP 404)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"consolidation job {job_id} does not exist")
        self.job_id = job_id


class MemoryNotFound(ConsolidationError, LookupError):
    """No memory has this id (reading one memory: MemoryService.get)."""

    def __init__(self, memory_id: int) -> None:
        super().__init__(f"memory {memory_id} does not exist")
        self.memory_id = memory_id


class JobStateConflict(ConsolidationError):
    """What was asked of a job does not fit the status it is in."""

    def __init__(self, job_id: int, status: str, wanted: str) -> None:
        super().__init__(f"consolidation job {job_id} is {status}; {wanted}")
        self.job_id = job_id
        self.status = status


class JobNotCancellable(JobStateConflict):
    """The job has finished: only a pending or running job can be cancelled (409)."""

    def __init__(self, job_id: int, status: str) -> None:
        super().__init__(job_id, status, "only a pending or running job can be cancelled")


class JobNotRetryable(JobStateConflict):
    """The job did not fail or time out: only such a job can be retried (409)."""

    def __init__(self, job_id: int, status: str) -> None:
        super().__init__(job_id, status, "only a failed or timed-out job can be retried")


class JobAlreadyRetried(JobStateConflict):
    """The failed or timed-out job has its retry already: a failure is retried once
    (409, naming the retry; retry that one if it failed too)."""

    def __init__(self, job_id: int, status: str, retry_job_id: int) -> None:
        super().__init__(
            job_id,
            status,
            f"it was already retried by job {retry_job_id} (retry that one if it failed too)",
        )
        self.retry_job_id = retry_job_id
