"""The manual trigger (triggers/manual.py), through the service's
trigger_consolidation_sync: a job now, with its scope and principal; the cooldown does
not apply, the one-active-job rule does; whatever is refused writes nothing."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from omoi_os.errors import ConsolidationAlreadyActive, ProjectInactive, ProjectNotFound
from omoi_os.models import JobStatus, QueuedTask, TaskState, TriggerType
from omoi_os.services.database import DatabaseService
from omoi_os.store.jobs import CONSOLIDATION_TASK, task_id_for_job
from tests.support.clocks import FakeClock
from tests.support.consolidation import MakeTriggers, finish_job, trigger_count
from tests.support.factories import Factories
from tests.support.logs import one, records
from tests.support.rows import stored_jobs


def test_manual_trigger_records_scope_and_principal(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = factories.project()
    triggers = make_triggers()

    with caplog.at_level(logging.INFO):
        job_id = triggers.trigger_consolidation_sync(
            project.id,
            TriggerType.MANUAL,
            {"memory_types": ["decision"], "dry_run": True},
            triggered_by="alice",
        )

    (job,) = stored_jobs(db)
    assert (job.id, job.trigger_type, job.triggered_by, job.status) == (
        job_id,
        TriggerType.MANUAL,
        "alice",
        JobStatus.PENDING,
    )
    assert (job.scheduled_for, job.created_at) == (None, clock())
    assert job.scope == {"memory_types": ["decision"], "unconsolidated_only": True, "dry_run": True}
    (row,) = factories.queue_rows()
    assert (row.task_type, row.task_id, row.state, row.available_at) == (
        CONSOLIDATION_TASK,
        task_id_for_job(job_id),
        TaskState.QUEUED,
        clock(),
    )
    created = one(caplog, "job_created")
    assert (created.trigger_type, created.project_id, created.job_id, created.triggered_by) == (
        "manual",
        str(project.id),
        job_id,
        "alice",
    )
    assert trigger_count(triggers, "manual", "created") == 1


def test_manual_trigger_without_a_principal_is_the_system(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    project = factories.project()

    make_triggers().trigger_consolidation_sync(project.id)

    (job,) = stored_jobs(db)
    assert (job.triggered_by, job.scope) == (
        "system",
        {"unconsolidated_only": True, "dry_run": False},
    )


def test_manual_trigger_ignores_the_cooldown(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=3600)
    first = triggers.trigger_consolidation_sync(project.id)
    finish_job(db, first, clock(), status=JobStatus.FAILED)
    # The cooldown is in effect: the threshold, with its backlog reached, holds back.
    factories.memories(project.id, 10)
    assert triggers.check_threshold_triggers_sync(project.id) is None
    assert trigger_count(triggers, "threshold", "skipped_cooldown") == 1

    second = triggers.trigger_consolidation_sync(project.id)

    assert second != first
    assert [(job.id, job.status) for job in stored_jobs(db)] == [
        (first, JobStatus.FAILED),
        (second, JobStatus.PENDING),
    ]
    assert [row.task_id for row in factories.queue_rows()] == [
        task_id_for_job(first),
        task_id_for_job(second),
    ]


def test_manual_trigger_while_a_job_is_active_reports_it_and_writes_nothing(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    project = factories.project()
    triggers = make_triggers()
    active = triggers.trigger_consolidation_sync(project.id)

    with pytest.raises(ConsolidationAlreadyActive) as excinfo:
        triggers.trigger_consolidation_sync(project.id, triggered_by="bob")

    assert (excinfo.value.project_id, excinfo.value.active_job_id) == (project.id, active)
    assert str(active) in str(excinfo.value)
    assert [job.id for job in stored_jobs(db)] == [active]
    assert [row.task_id for row in factories.queue_rows()] == [task_id_for_job(active)]
    refused = one(caplog, "trigger_refused")
    assert (refused.outcome, refused.project_id) == ("skipped_active", str(project.id))
    assert [r.job_id for r in records(caplog, "job_created")] == [active]  # the first call only
    assert trigger_count(triggers, "manual", "skipped_active") == 1
    assert trigger_count(triggers, "manual", "created") == 1


def test_manual_trigger_while_a_running_job_is_active_names_that_job(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    project = factories.project()
    running = factories.job(project.id, status=JobStatus.RUNNING)

    with pytest.raises(ConsolidationAlreadyActive) as excinfo:
        make_triggers().trigger_consolidation_sync(project.id)

    assert excinfo.value.active_job_id == running.id
    assert [job.id for job in stored_jobs(db)] == [running.id]
    assert factories.count(QueuedTask) == 0


@pytest.mark.parametrize(
    "scope",
    [{"bogus": 1}, {"min_age_days": -3}],
    ids=["unknown-key", "negative-age"],
)
def test_rejected_manual_triggers_write_nothing(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    scope: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = factories.project()
    inactive = factories.project(is_active=False)
    triggers = make_triggers()
    missing = uuid.uuid4()

    with caplog.at_level(logging.INFO):
        with pytest.raises(ValidationError):
            triggers.trigger_consolidation_sync(project.id, scope=scope)
        with pytest.raises(ProjectNotFound, match="does not exist"):
            triggers.trigger_consolidation_sync(missing)
        with pytest.raises(ProjectNotFound):
            triggers.trigger_consolidation_sync("not-a-uuid")
        with pytest.raises(ProjectInactive, match="is inactive"):
            triggers.trigger_consolidation_sync(inactive.id)

    assert stored_jobs(db) == []
    assert factories.count(QueuedTask) == 0
    refused = records(caplog, "trigger_refused")
    assert [(r.outcome, r.project_id) for r in refused] == [
        ("rejected", str(project.id)),
        ("rejected", str(missing)),
        ("rejected", "not-a-uuid"),
        ("rejected", str(inactive.id)),
    ]
    assert records(caplog, "job_created") == []
    assert trigger_count(triggers, "manual", "rejected") == 4


def test_scheduled_jobs_only_come_from_ticks(
    db: DatabaseService, make_triggers: MakeTriggers, factories: Factories
) -> None:
    project = factories.project()

    with pytest.raises(ValueError, match="run_scheduled_tick"):
        make_triggers().trigger_consolidation_sync(project.id, TriggerType.SCHEDULED)

    assert stored_jobs(db) == []
    assert factories.count(QueuedTask) == 0


def test_a_manual_trigger_on_a_paused_project_works_and_says_so(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    paused = factories.project(paused_at=clock(), paused_by="alice").id
    running = factories.project().id
    triggers = make_triggers()

    paused_job = triggers.trigger_consolidation_sync(paused, triggered_by="bob")
    running_job = triggers.trigger_consolidation_sync(running, triggered_by="bob")

    assert [(job.id, job.project_paused) for job in stored_jobs(db)] == [
        (paused_job, True),
        (running_job, False),
    ]
    assert factories.count(QueuedTask) == 2
