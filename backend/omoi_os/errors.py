"""Domain errors of consolidation. Raised by services; the API maps them to HTTP in
one place (404 for lookups, 409 for conflicts)."""

from __future__ import annotations

import uuid


class ConsolidationError(Exception):
    """Base of the errors a trigger can answer with."""


class ProjectNotFound(ConsolidationError, LookupError):
    def __init__(self, project_id: uuid.UUID | str) -> None:
        super().__init__(f"project {project_id} does not exist")
        self.project_id = project_id


class ProjectInactive(ConsolidationError):
    def __init__(self, project_id: uuid.UUID) -> None:
        super().__init__(f"project {project_id} is inactive")
        self.project_id = project_id


class ConsolidationAlreadyActive(ConsolidationError):
    """The project already has a pending or running job (one at a time, by design)."""

    def __init__(self, project_id: uuid.UUID, active_job_id: int) -> None:
        super().__init__(
            f"project {project_id} already has active consolidation job {active_job_id}"
        )
        self.project_id = project_id
        self.active_job_id = active_job_id


class JobNotFound(ConsolidationError, LookupError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"consolidation job {job_id} does not exist")
        self.job_id = job_id
