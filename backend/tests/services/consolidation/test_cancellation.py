"""Cancelling, retrying, and deactivating a project, through the services the HTTP
routes and the command line call, with a real worker, on both databases."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import update

from omoi_os.config import AppSettings
from omoi_os.errors import (
    ConsolidationAlreadyActive,
    JobAlreadyRetried,
    JobNotCancellable,
    JobNotFound,
    JobNotRetryable,
    ProjectInactive,
)
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import ConsolidationJob, JobStatus, TaskState
from omoi_os.services.consolidation.cancellation import Cancelled
from omoi_os.services.consolidation.job_service import JobService
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService
from omoi_os.services.projects import ProjectService
from omoi_os.services.task_queue import TaskQueueService
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.rows import stored_job, stored_memories

FINISHED = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED]


class _Ops:
    """The services one runtime would hold, sharing a queue and a clock."""

    def __init__(self, db: DatabaseService, clock: FakeClock, **settings: Any) -> None:
        values: dict[str, Any] = {"database_url": db.url, "worker_batch_size": 2}
        self.settings = AppSettings(**(values | settings))
        self.queue = TaskQueueService(clock=clock)
        self.triggers = ConsolidationTriggerService(
            db, settings=self.settings, task_queue=self.queue, clock=clock
        )
        self.jobs = JobService(db, queue=self.queue, clock=clock)
        self.projects = ProjectService(db, settings=self.settings, queue=self.queue, clock=clock)
        self.clock = clock
        self.db = db

    def worker(self, **hooks: Any) -> ConsolidationWorker:
        worker_class = _CancellingWorker if hooks else ConsolidationWorker
        worker = worker_class(
            self.db,
            settings=self.settings,
            queue=self.queue,
            metrics=ConsolidationMetrics(),
            clock=self.clock,
        )
        for name, value in hooks.items():
            setattr(worker, name, value)
        return worker


class _CancellingWorker(ConsolidationWorker):
    """Runs `between_batches` once, the second time the runner asks whether to go on
    (it asks before every batch): after the first batch committed, before the second."""

    between_batches: Any = None
    _asked = 0

    def _should_stop(self) -> bool:
        self._asked += 1
        if self._asked == 2 and self.between_batches is not None:
            self.between_batches()
        return super()._should_stop()


@pytest.fixture
def ops(db: DatabaseService, clock: FakeClock) -> _Ops:
    clock.set(T0)
    return _Ops(db, clock)


def _task_state(factories: Factories) -> TaskState:
    (task,) = factories.queue_rows()
    return task.state


# --- cancel -----------------------------------------------------------------------------


def test_a_cancelled_pending_job_is_never_run(ops: _Ops, factories: Factories) -> None:
    project = factories.project()
    factories.memories(project.id, 3)
    job_id = ops.triggers.trigger_consolidation_sync(project.id)

    job, how = ops.jobs.cancel_sync(job_id, by="alice", reason="bad deploy")

    assert how is Cancelled.AT_ONCE
    assert (job.status, job.finished_at, job.cancel_requested_at) == (JobStatus.CANCELLED, T0, T0)
    assert (job.cancelled_by, job.cancel_reason) == ("alice", "bad deploy")
    assert _task_state(factories) is TaskState.DONE
    assert ops.worker().run_once() is False  # nothing to claim
    assert stored_job(ops.db, job_id).status is JobStatus.CANCELLED
    assert not any(memory.is_consolidated for memory in stored_memories(ops.db))


def test_a_cancelled_running_job_stops_after_the_batch_in_progress(
    ops: _Ops, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 7)  # four batches of two
    job_id = ops.triggers.trigger_consolidation_sync(project.id)
    answers: list[Cancelled] = []

    def cancel() -> None:  # after batch 1 committed: batch 2 is the one in progress
        answers.append(ops.jobs.cancel_sync(job_id, by="alice", reason="incident")[1])

    assert ops.worker(between_batches=cancel).run_once() is True

    assert answers == [Cancelled.STOPPING]
    job = stored_job(ops.db, job_id)
    assert (job.status, job.finished_at, job.cancelled_by) == (JobStatus.CANCELLED, T0, "alice")
    assert (job.result or {})["memories_consolidated"] == 4  # batches 1 and 2 stay
    assert sum(memory.is_consolidated for memory in stored_memories(ops.db)) == 4
    assert _task_state(factories) is TaskState.DONE
    # Its project is free again, and a later job does the rest.
    later = ops.triggers.trigger_consolidation_sync(project.id)
    assert ops.worker().run_once() is True
    assert stored_job(ops.db, later).status is JobStatus.COMPLETED
    assert all(memory.is_consolidated for memory in stored_memories(ops.db))


def test_a_job_asked_to_stop_before_a_worker_takes_it_ends_without_a_batch(
    ops: _Ops, factories: Factories
) -> None:
    """Its worker died and the task is queued again: the next worker ends it."""
    project = factories.project()
    factories.memories(project.id, 3)
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0)
    with ops.db.transaction() as session:
        ops.queue.enqueue(session=session, task_type="consolidation", tasks=[(str(job.id), T0)])

    assert ops.jobs.cancel_sync(job.id, by="alice")[1] is Cancelled.STOPPING
    assert ops.worker().run_once() is True

    assert stored_job(ops.db, job.id).status is JobStatus.CANCELLED
    assert not any(memory.is_consolidated for memory in stored_memories(ops.db))


def test_asking_a_stopping_job_again_is_no_error(ops: _Ops, factories: Factories) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0)

    first = ops.jobs.cancel_sync(job.id, by="alice", reason="first")[1]
    second = ops.jobs.cancel_sync(job.id, by="bob", reason="second")[1]

    assert (first, second) == (Cancelled.STOPPING, Cancelled.STOPPING)
    stored = stored_job(ops.db, job.id)
    assert (stored.status, stored.cancelled_by, stored.cancel_reason) == (
        JobStatus.RUNNING,
        "alice",
        "first",
    )


@pytest.mark.parametrize("status", FINISHED)
def test_a_finished_job_cannot_be_cancelled(
    ops: _Ops, factories: Factories, status: JobStatus
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=status, finished_at=T0)

    with pytest.raises(JobNotCancellable, match=f"is {status.value}; only a pending or running"):
        ops.jobs.cancel_sync(job.id, by="alice")

    stored = stored_job(ops.db, job.id)
    assert (stored.status, stored.cancel_requested_at, stored.cancelled_by) == (status, None, None)


def test_an_unknown_job_cannot_be_cancelled(ops: _Ops) -> None:
    with pytest.raises(JobNotFound, match="job 404 does not exist"):
        ops.jobs.cancel_sync(404, by="alice")


# --- deactivation -----------------------------------------------------------------------


def test_deactivating_cancels_the_pending_job_and_the_409s_agree(
    ops: _Ops, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 3)
    job_id = ops.triggers.trigger_consolidation_sync(project.id)

    ops.projects.update_sync(project.id, is_active=False, by="alice")

    job = stored_job(ops.db, job_id)
    assert (job.status, job.cancelled_by, job.cancel_reason) == (
        JobStatus.CANCELLED,
        "alice",
        "project deactivated",
    )
    assert ops.worker().run_once() is False
    with pytest.raises(ProjectInactive) as refused:
        ops.triggers.trigger_consolidation_sync(project.id)
    assert refused.value.active_job_id is None


def test_deactivating_stops_the_running_job_and_the_409_names_it(
    ops: _Ops, factories: Factories
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0)

    ops.projects.update_sync(project.id, is_active=False, by="alice")

    stored = stored_job(ops.db, job.id)
    assert (stored.status, stored.cancel_requested_at) == (JobStatus.RUNNING, T0)
    with pytest.raises(ProjectInactive, match=f"its job {job.id} is stopping") as refused:
        ops.triggers.trigger_consolidation_sync(project.id)
    assert refused.value.active_job_id == job.id


# --- retry ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.TIMED_OUT])
def test_a_failed_job_is_retried_with_its_scope(
    ops: _Ops, factories: Factories, status: JobStatus
) -> None:
    project = factories.project()
    scope = {"memory_types": ["error_fix"], "unconsolidated_only": True, "dry_run": False}
    failed = factories.job(project.id, status=status, scope=scope, finished_at=T0)

    retry_id = ops.triggers.retry_sync(failed.id, triggered_by="alice")

    retry = stored_job(ops.db, retry_id)
    assert (retry.project_id, retry.scope, retry.retry_of_id) == (project.id, scope, failed.id)
    assert (retry.status, retry.triggered_by) == (JobStatus.PENDING, "alice")
    assert len(factories.queue_rows()) == 1


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED])
def test_only_a_failed_job_is_retried(ops: _Ops, factories: Factories, status: JobStatus) -> None:
    project = factories.project()
    job = factories.job(project.id, status=status)

    with pytest.raises(JobNotRetryable, match=f"is {status.value}; only a failed or timed-out"):
        ops.triggers.retry_sync(job.id)

    assert factories.queue_rows() == []


def test_a_retry_waits_for_the_projects_active_job(ops: _Ops, factories: Factories) -> None:
    project = factories.project()
    failed = factories.job(project.id, status=JobStatus.FAILED, finished_at=T0)
    active = factories.job(project.id, status=JobStatus.PENDING)

    with pytest.raises(ConsolidationAlreadyActive) as refused:
        ops.triggers.retry_sync(failed.id)

    assert refused.value.active_job_id == active.id
    assert factories.queue_rows() == []


# --- a failure is retried once --------------------------------------------------------


def _run_to_the_end(ops: _Ops, job_id: int, status: JobStatus) -> None:
    assert ops.worker().run_once() is True
    assert stored_job(ops.db, job_id).status == status


def test_a_failure_is_retried_once_and_the_second_retry_names_the_first(
    ops: _Ops, factories: Factories
) -> None:
    project = factories.project()
    failed = factories.job(project.id, status=JobStatus.FAILED, finished_at=T0)
    retry_id = ops.triggers.retry_sync(failed.id)
    assert stored_job(ops.db, failed.id).retried_by_id == retry_id

    with pytest.raises(JobAlreadyRetried, match=f"already retried by job {retry_id}") as pending:
        ops.triggers.retry_sync(failed.id)
    _run_to_the_end(ops, retry_id, JobStatus.COMPLETED)
    with pytest.raises(JobAlreadyRetried) as completed:
        ops.triggers.retry_sync(failed.id)

    assert pending.value.retry_job_id == completed.value.retry_job_id == retry_id
    assert factories.count(ConsolidationJob) == 2


def test_a_retry_that_failed_is_retried_in_its_turn(ops: _Ops, factories: Factories) -> None:
    project = factories.project()
    failed = factories.job(project.id, status=JobStatus.FAILED, finished_at=T0)
    first = ops.triggers.retry_sync(failed.id)
    with ops.db.transaction() as session:  # the retry failed too (how, does not matter)
        session.execute(
            update(ConsolidationJob).where(ConsolidationJob.id == first).values(status="failed")
        )

    second = ops.triggers.retry_sync(first)

    chain = [stored_job(ops.db, id_) for id_ in (failed.id, first, second)]
    assert [(job.retry_of_id, job.retried_by_id) for job in chain] == [
        (None, first),
        (failed.id, second),
        (first, None),
    ]


def test_the_database_decides_between_retries_that_both_read_no_retry(
    ops: _Ops, factories: Factories
) -> None:
    """Both retries read the failed job before either wrote: the conditional update
    on the failed job, not that read, refuses the second, and nothing of it stays."""
    project = factories.project()
    failed = factories.job(project.id, status=JobStatus.FAILED, finished_at=T0)
    stale = stored_job(ops.db, failed.id)  # retried_by_id None, as both read it
    retry_id = ops.triggers.manual.trigger(project.id, retry_of=stale)
    _run_to_the_end(ops, retry_id, JobStatus.COMPLETED)

    with pytest.raises(JobAlreadyRetried) as refused:
        ops.triggers.manual.trigger(project.id, retry_of=stale)

    assert refused.value.retry_job_id == retry_id
    assert factories.count(ConsolidationJob) == 2
    assert len(factories.queue_rows()) == 1  # the retry's own task, done


def test_eight_concurrent_retries_of_one_failure_make_one_job(
    ops: _Ops, factories: Factories
) -> None:
    project = factories.project()
    failed = factories.job(project.id, status=JobStatus.FAILED, finished_at=T0)
    start = threading.Barrier(8)

    def retry() -> int | Exception:
        start.wait()
        try:
            return ops.triggers.retry_sync(failed.id, triggered_by="bob")
        except (JobAlreadyRetried, ConsolidationAlreadyActive) as refused:
            return refused

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: retry(), range(8)))

    created = [outcome for outcome in outcomes if isinstance(outcome, int)]
    assert len(created) == 1
    refused = [outcome for outcome in outcomes if not isinstance(outcome, int)]
    assert all(
        getattr(exc, "retry_job_id", None) == created[0]
        or getattr(exc, "active_job_id", None) == created[0]
        for exc in refused
    )
    assert factories.count(ConsolidationJob) == 2
    assert stored_job(ops.db, failed.id).retried_by_id == created[0]
    assert len(factories.queue_rows()) == 1
