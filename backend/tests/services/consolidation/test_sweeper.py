"""The Sweeper (sweeper.py): it ends jobs that cannot finish on their own, so that no
dead job blocks its project: a job running past consolidation_timeout plus
TIMEOUT_GRACE is timed out (and its task abandoned, fencing out its worker); an
active job whose queue task died is failed."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import JobStatus, Project, QueuedTask, TaskState
from omoi_os.services.consolidation.sweeper import TIMEOUT_GRACE, Sweeper
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store.jobs import CONSOLIDATION_TASK
from tests.support.clocks import FakeClock
from tests.support.factories import Factories
from tests.support.logs import one, records
from tests.support.rows import stored_jobs


class Parts:
    """A sweeper and the triggers that make its jobs, sharing one queue and metrics."""

    def __init__(self, db: DatabaseService, clock: FakeClock, **settings: Any) -> None:
        values: dict[str, Any] = {"database_url": db.url, "consolidation_threshold": 10}
        self.settings = AppSettings(**(values | settings))
        self.queue = TaskQueueService(clock=clock)
        self.metrics = ConsolidationMetrics()
        self.triggers = ConsolidationTriggerService(
            db, settings=self.settings, task_queue=self.queue, metrics=self.metrics, clock=clock
        )
        self.sweeper = Sweeper(
            db, self.queue, settings=self.settings, clock=clock, metrics=self.metrics
        )

    def finished(self, status: JobStatus) -> float:
        value = self.metrics.registry.get_sample_value(
            "omoi_consolidation_jobs_finished_total", {"status": status.value}
        )
        return value or 0.0


def test_sweeper_times_out_an_overrunning_job_and_frees_the_project(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    parts = Parts(db, clock, consolidation_timeout=600)
    project = factories.project()
    job_id = parts.triggers.trigger_consolidation_sync(project.id)
    # A worker claims the task and starts the job (as ConsolidationWorker.run_once
    # does, in one transaction), then dies.
    with db.transaction() as session:
        (task,) = parts.queue.claim(
            session=session, task_types=[CONSOLIDATION_TASK], worker_id="worker-that-dies"
        )
        started = job_store.start_job(session, job_store.job_id_for_task(task.task_id), now=clock())
    assert started is not None and started.id == job_id

    clock.advance(timedelta(seconds=600) + TIMEOUT_GRACE)
    assert parts.sweeper.sweep() == []  # not past the grace yet
    assert records(caplog, "job_swept") == []
    clock.advance(timedelta(seconds=1))
    assert parts.sweeper.sweep() == [job_id]

    (job,) = stored_jobs(db)
    assert (job.status, job.finished_at) == (JobStatus.TIMED_OUT, clock())
    with db.read() as session:  # a timed-out job starts the project's cooldown
        assert session.get(Project, project.id).cooldown_from == clock()  # type: ignore[union-attr]
    assert job.error == (
        "ran longer than consolidation_timeout (600 s) plus 60 s; ended by the sweeper"
    )
    (row,) = factories.queue_rows()
    assert (row.state, row.last_error, row.claimed_by) == (TaskState.DEAD, job.error, None)
    swept = one(caplog, "job_swept")
    assert (swept.status, swept.job_id, swept.project_id) == (
        "timed_out",
        job_id,
        str(project.id),
    )
    assert parts.finished(JobStatus.TIMED_OUT) == 1
    # The worker that wakes up later is fenced out.
    with db.transaction() as session:
        assert parts.queue.complete(session=session, task=task, worker_id="worker-that-dies") is (
            False
        )
        assert job_store.finish_job(session, job_id, status=JobStatus.COMPLETED, now=clock()) is (
            False
        )
    assert one(caplog, "task_not_held").worker == "worker-that-dies"
    # The project is free: a new job can start.
    assert parts.triggers.trigger_consolidation_sync(project.id) != job_id
    assert parts.sweeper.sweep() == []  # and the sweeper leaves the ended job alone
    assert len(records(caplog, "job_swept")) == 1


def test_sweeper_fails_a_job_whose_queue_task_died(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    parts = Parts(db, clock)
    project, other = factories.project(), factories.project()
    job_id = parts.triggers.trigger_consolidation_sync(project.id)
    healthy = parts.triggers.trigger_consolidation_sync(other.id)
    with db.transaction() as session:
        session.execute(
            update(QueuedTask)
            .where(QueuedTask.task_id == job_store.task_id_for_job(job_id))
            .values(state=TaskState.DEAD, last_error="boom")
        )

    assert parts.sweeper.sweep() == [job_id]

    assert [(job.id, job.status, job.error, job.finished_at) for job in stored_jobs(db)] == [
        (job_id, JobStatus.FAILED, "queue gave up: boom", clock()),
        (healthy, JobStatus.PENDING, None, None),
    ]
    swept = one(caplog, "job_swept")
    assert (swept.status, swept.job_id, swept.project_id) == ("failed", job_id, str(project.id))
    assert parts.finished(JobStatus.FAILED) == 1
    assert parts.sweeper.sweep() == []
    assert parts.triggers.trigger_consolidation_sync(project.id) not in (job_id, healthy)


def test_a_sweep_with_nothing_to_end_changes_nothing(
    db: DatabaseService, factories: Factories, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    parts = Parts(db, clock)
    project = factories.project()
    job_id = parts.triggers.trigger_consolidation_sync(project.id)
    clock.advance(timedelta(days=1))  # pending jobs never time out: only running ones

    assert parts.sweeper.sweep() == []

    assert [(job.id, job.status) for job in stored_jobs(db)] == [(job_id, JobStatus.PENDING)]
    assert [row.state for row in factories.queue_rows()] == [TaskState.QUEUED]
    assert records(caplog, "job_swept") == []
