"""The threshold trigger: after a memory write commits, start a job when the project's
unconsolidated memories reached its threshold, no job is active, the cooldown is over
and the project is not paused. A project's own threshold and cooldown, when it has
them, replace the global settings (COALESCE in the same query).

One query gathers what the decision needs, counting the backlog no further than the
threshold, so its cost does not grow with the backlog; the decision itself is a pure
function (decisions.decide_threshold). A crossing that comes while a job is active or
the cooldown runs is remembered on the project, and the periodic pass fires it once
both are over (`fire_deferred`), so it is never lost waiting for the next write. That
pass applies the same rule in SQL, to every deferred crossing in one statement; a test
holds the two forms to one table of cases.

A crossing while the project is paused is dropped, not deferred (and pausing forgets
one already deferred): resuming a project starts nothing by itself; its next memory
write, or the next scheduled tick, sees its backlog as usual.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Select, Uuid, bindparam, literal, or_, select
from sqlalchemy.orm import Session

from omoi_os.clock import Clock
from omoi_os.config import AppSettings
from omoi_os.errors import ProjectNotFound
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import TriggerType
from omoi_os.services.consolidation.decisions import (
    ThresholdProbe,
    TriggerOutcome,
    decide_threshold,
    defer_crossing,
)
from omoi_os.services.consolidation.scope import DEFAULT_SCOPE
from omoi_os.services.consolidation.triggers.job_writer import JobWriter
from omoi_os.services.database import DatabaseService
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store
from omoi_os.store import projects as project_store

logger = logging.getLogger(__name__)

THRESHOLD_PRINCIPAL = "threshold"


def _probe_statement() -> Select[Any]:
    """The probe, then the project's effective threshold and cooldown: its own, or the
    global settings (`threshold`, `cooldown`) when it has none. The backlog is counted
    up to the effective threshold."""
    project_id = bindparam("project_id", type_=Uuid)
    threshold = bindparam("threshold", type_=Integer)
    cooldown = bindparam("cooldown", type_=Integer)
    return project_store.trigger_state(
        project_id,
        job_store.active_job_id_sql(project_id),
        memory_store.unconsolidated_count_upto(
            project_id, project_store.threshold_of(project_id, threshold)
        ),
        project_store.is_paused(),
        project_store.effective_threshold(threshold),
        project_store.effective_cooldown(cooldown),
    )


# Built once: this runs after every memory write, and building it is most of its cost.
PROBE = _probe_statement()


class ThresholdTrigger:
    """Checks a project's backlog after a memory write and starts a job when due."""

    def __init__(
        self,
        db: DatabaseService,
        writer: JobWriter,
        *,
        settings: AppSettings,
        clock: Clock,
        metrics: ConsolidationMetrics,
    ) -> None:
        self._db = db
        self._writer = writer
        self._settings = settings
        self._clock = clock
        self._metrics = metrics

    def check(self, project_id: uuid.UUID | str) -> int | None:
        """Returns the id of the job this check created, or None. Raises ProjectNotFound."""
        project = project_store.parse_project_id(project_id)
        started = time.perf_counter()
        job_id, outcome = self._check(project)
        self._metrics.threshold_check_seconds.observe(time.perf_counter() - started)
        self._metrics.count_trigger(TriggerType.THRESHOLD, outcome)
        fields = {
            "action": "threshold_checked",
            "outcome": outcome.value,
            "project_id": str(project),
        }
        if job_id is not None:
            logger.info(
                "threshold trigger for project %s: created job %d",
                project,
                job_id,
                extra=fields
                | {"action": "job_created", "job_id": job_id, "trigger_type": "threshold"},
            )
        else:
            logger.debug("threshold trigger for project %s: %s", project, outcome, extra=fields)
        return job_id

    def _check(self, project: uuid.UUID) -> tuple[int | None, TriggerOutcome]:
        now = self._clock()
        with self._db.transaction() as session:
            params = {
                "project_id": project,
                "threshold": self._settings.consolidation_threshold,
                "cooldown": self._settings.consolidation_cooldown,
            }
            row = session.connection().execute(PROBE, params).one_or_none()
            if row is None:
                raise ProjectNotFound(project)
            *state, threshold, cooldown = row
            probe = ThresholdProbe(*state)
            outcome = decide_threshold(
                probe, threshold=threshold, cooldown=timedelta(seconds=cooldown), now=now
            )
            if defer_crossing(probe, outcome):
                project_store.defer_crossing(session, project, at=now)
            if outcome is not TriggerOutcome.CREATED:
                return None, outcome
            created = self._write(session, select(literal(project)), now)
            if created and probe.crossing_deferred:
                project_store.clear_deferred_crossings(session, [project])
        if not created:  # a concurrent write crossed the threshold first and its job won
            return None, TriggerOutcome.SKIPPED_ACTIVE
        return created[0].id, TriggerOutcome.CREATED

    def fire_deferred(self) -> list[int]:
        """The periodic pass's step: start a job for every project whose crossing was
        deferred and can fire now (not paused, no active job, its cooldown over, still at
        or over its threshold), set-based; forget the crossings that fired or no longer
        hold. Its cost is bounded by the projects with a deferred crossing: each backlog
        is counted no further than the largest threshold among them."""
        default_threshold = literal(self._settings.consolidation_threshold)
        now = self._clock()
        marked = project_store.with_deferred_crossing()
        project_id = marked.selected_columns[0]
        threshold = project_store.effective_threshold(default_threshold)
        backlog = memory_store.unconsolidated_count_upto(
            project_id, project_store.largest_threshold_deferred(default_threshold)
        )
        # decide_threshold's rule again, in SQL: the pass decides every marked project in
        # one statement, so only the jobs it creates come back to Python however many
        # wait (after a fleet tick, most projects have an active job). The check after a
        # write keeps the Python form: it needs the outcome itself (metric, log line,
        # deferral). test_threshold.py runs one table of cases through both.
        due = marked.where(
            project_store.cooled_down(
                project_id, now=now, default_cooldown=self._settings.consolidation_cooldown
            ),
            ~job_store.has_active_job(project_id),
            backlog >= threshold,
        )
        stale = marked.where(or_(backlog < threshold, project_store.is_paused()))
        with self._db.transaction() as session:
            created = self._write(session, due, now)
            project_store.clear_deferred_crossings(session, [job.project_id for job in created])
            project_store.clear_deferred_crossings(session, stale)
        for job in created:
            self._metrics.count_trigger(TriggerType.THRESHOLD, TriggerOutcome.CREATED)
            logger.info(
                "threshold trigger for project %s: created job %d (a crossing deferred by "
                "its cooldown or active job)",
                job.project_id,
                job.id,
                extra={
                    "action": "job_created",
                    "trigger_type": "threshold",
                    "deferred": True,
                    "job_id": job.id,
                    "project_id": str(job.project_id),
                },
            )
        return [job.id for job in created]

    def _write(
        self, session: Session, project_ids: Select[Any], now: datetime
    ) -> list[job_store.NewJob]:
        return self._writer.write(
            session,
            project_ids,
            trigger_type=TriggerType.THRESHOLD,
            scope=DEFAULT_SCOPE,
            triggered_by=THRESHOLD_PRINCIPAL,
            delay=timedelta(seconds=self._settings.consolidation_debounce),
        )
