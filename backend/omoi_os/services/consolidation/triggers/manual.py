"""The manual trigger: a job now, for one project, with an optional scope.

It ignores the cooldown and the project's pause (an operator asked; the job records
that its project was paused), but never the one-active-job rule: a
project with a pending or running job answers ConsolidationAlreadyActive, naming that
job. Whatever is refused writes nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from omoi_os.errors import (
    ConsolidationAlreadyActive,
    ConsolidationError,
    JobAlreadyRetried,
    JobNotFound,
    JobNotRetryable,
    ProjectInactive,
    ProjectNotFound,
)
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import ConsolidationJob, JobStatus, TriggerType
from omoi_os.services.consolidation.decisions import TriggerOutcome
from omoi_os.services.consolidation.scope import ConsolidationScope, parse_scope
from omoi_os.services.consolidation.triggers.job_writer import JobWriter
from omoi_os.services.database import DatabaseService
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store

logger = logging.getLogger(__name__)

SYSTEM_PRINCIPAL = job_store.SYSTEM_PRINCIPAL
RETRYABLE = (JobStatus.FAILED, JobStatus.TIMED_OUT)
# An insert that conflicts means an active job exists; should that job finish before
# its id is read, the insert is simply tried again.
_CONFLICT_ATTEMPTS = 3


class ManualTrigger:
    """Creates a job on request."""

    def __init__(
        self, db: DatabaseService, writer: JobWriter, *, metrics: ConsolidationMetrics
    ) -> None:
        self._db = db
        self._writer = writer
        self._metrics = metrics

    def trigger(
        self,
        project_id: uuid.UUID | str,
        *,
        scope: ConsolidationScope | dict[str, Any] | None = None,
        triggered_by: str | None = None,
        trigger_type: TriggerType = TriggerType.MANUAL,
        retry_of: ConsolidationJob | None = None,
    ) -> int:
        """Create and queue a job now (recorded as the one retry of the failed job
        `retry_of`, if given); returns its id. Raises ValidationError (bad scope),
        ProjectNotFound, ProjectInactive, ConsolidationAlreadyActive or
        JobAlreadyRetried; nothing is written then."""
        principal = triggered_by or SYSTEM_PRINCIPAL
        try:
            job_id = self._create(
                project_store.parse_project_id(project_id),
                parse_scope(scope),
                principal,
                trigger_type,
                retry_of,
            )
        except (ValidationError, ConsolidationError) as exc:
            self._refused(project_id, trigger_type, exc)
            raise
        self._metrics.count_trigger(trigger_type, TriggerOutcome.CREATED)
        logger.info(
            "%s trigger for project %s: created job %d (by %s)",
            trigger_type,
            project_id,
            job_id,
            principal,
            extra={
                "action": "job_created",
                "trigger_type": trigger_type.value,
                "project_id": str(project_id),
                "job_id": job_id,
                "triggered_by": principal,
            },
        )
        return job_id

    def _create(
        self,
        project_id: uuid.UUID,
        scope: ConsolidationScope,
        principal: str,
        trigger_type: TriggerType,
        retry_of: ConsolidationJob | None,
    ) -> int:
        with self._db.transaction() as session:
            paused = _require_active(session, project_id)
            for _ in range(_CONFLICT_ATTEMPTS):
                created = self._writer.write(
                    session,
                    select(literal(project_id)),
                    trigger_type=trigger_type,
                    scope=scope,
                    triggered_by=principal,
                    project_paused=paused,
                )
                if created:
                    if retry_of is not None:
                        _link_retry(session, created[0].id, retry_of)
                    return created[0].id
                if retry_of is not None:
                    # A concurrent retry's job may be the active one that refused ours.
                    _refuse_a_second_retry(session, retry_of)
                active_job_id = job_store.active_job_id(session, project_id)
                if active_job_id is not None:
                    raise ConsolidationAlreadyActive(project_id, active_job_id)
        raise RuntimeError(f"project {project_id}: could neither create nor find its active job")

    def retry(self, job_id: int, *, triggered_by: str | None = None) -> int:
        """A new job for a failed or timed-out one: same project and scope, recorded as
        its retry; the manual trigger's rules apply. A failure is retried once: raises
        JobAlreadyRetried, naming the retry, for a job that has one (of concurrent
        retries, one wins). Raises JobNotFound, JobNotRetryable or what `trigger`
        raises; nothing is written then."""
        with self._db.read() as session:
            job = job_store.get_job(session, job_id)
        if job.status not in RETRYABLE:
            raise JobNotRetryable(job_id, job.status.value)
        if job.retried_by_id is not None:  # the common refusal, without a write
            raise JobAlreadyRetried(job_id, job.status.value, job.retried_by_id)
        return self.trigger(
            job.project_id, scope=job.scope, triggered_by=triggered_by, retry_of=job
        )

    def _refused(
        self, project_id: uuid.UUID | str, trigger_type: TriggerType, exc: Exception
    ) -> None:
        outcome = (
            TriggerOutcome.SKIPPED_ACTIVE
            if isinstance(exc, ConsolidationAlreadyActive)
            else TriggerOutcome.REJECTED
        )
        self._metrics.count_trigger(trigger_type, outcome)
        logger.info(
            "%s trigger for project %s: %s (%s)",
            trigger_type,
            project_id,
            outcome,
            exc,
            extra={
                "action": "trigger_refused",
                "outcome": outcome.value,
                "project_id": str(project_id),
            },
        )


def _require_active(session: Session, project_id: uuid.UUID) -> bool:
    """Raise unless the project exists and is active; returns whether it is paused."""
    state = project_store.activity(session, project_id)
    if state is None:
        raise ProjectNotFound(project_id)
    is_active, paused = state
    if not is_active:  # a job still stopping after the deactivation is named
        raise ProjectInactive(project_id, job_store.active_job_id(session, project_id))
    return paused


def _link_retry(session: Session, job_id: int, retry_of: ConsolidationJob) -> None:
    """Make job `job_id` the retry of `retry_of`, or raise (rolling it back) if a
    concurrent retry committed first, or retention deleted `retry_of` meanwhile."""
    if not job_store.link_retry(session, job_id, retry_of=retry_of.id):
        _refuse_a_second_retry(session, retry_of)
        raise JobNotFound(retry_of.id)


def _refuse_a_second_retry(session: Session, retry_of: ConsolidationJob) -> None:
    retry_job_id = job_store.retried_by(session, retry_of.id)
    if retry_job_id is not None:
        raise JobAlreadyRetried(retry_of.id, retry_of.status.value, retry_job_id)
