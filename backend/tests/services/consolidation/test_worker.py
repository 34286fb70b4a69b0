"""ConsolidationWorker against real databases: the full trigger → job → worker loop,
retries, timeouts, stopping, crashes, and two workers sharing one queue."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import OperationalError

from omoi_os.clock import utc_now
from omoi_os.config import AppSettings
from omoi_os.failures import MAX_FAILURE_LENGTH
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import (
    ConsolidationJob,
    JobStatus,
    MemoryTier,
    MemoryType,
    QueuedTask,
    TaskMemory,
    TaskState,
    TriggerType,
)
from omoi_os.services.consolidation import worker as worker_module
from omoi_os.services.consolidation.runner import ConsolidationRunner
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, NewMemory
from omoi_os.services.task_queue import QueueListener, RetryPolicy, TaskQueueService
from omoi_os.store.jobs import CONSOLIDATION_TASK
from tests.support.clocks import FakeClock
from tests.support.consolidation import write_memories
from tests.support.factories import T0, Factories
from tests.support.logs import one, records
from tests.support.polling import wait_for
from tests.support.rows import stored_job, stored_memories
from tests.support.servers import OMOI_OS, cli_env

OUTBOX = NewMemory(memory_type=MemoryType.DECISION, execution_summary="use the outbox")


def _settings(db: DatabaseService, **overrides: Any) -> AppSettings:
    values: dict[str, Any] = {
        "database_url": db.url,
        "consolidation_threshold": 10,
        "consolidation_cooldown": 0,
        "worker_poll_interval": 0.05,
    }
    return AppSettings(**(values | overrides))


def _worker(
    db: DatabaseService,
    settings: AppSettings,
    *,
    queue: TaskQueueService | None = None,
    clock: Any = None,
    cls: type[ConsolidationWorker] = ConsolidationWorker,
    **kwargs: Any,
) -> ConsolidationWorker:
    """A worker on `db` with its own queue (or `queue`) and metrics, as the runtime
    builds one."""
    clock = clock or utc_now
    lease = timedelta(seconds=settings.worker_lease_seconds)
    queue = queue or TaskQueueService(clock=clock, lease=lease)
    return cls(
        db, settings=settings, queue=queue, metrics=ConsolidationMetrics(), clock=clock, **kwargs
    )


def _unconsolidated(db: DatabaseService) -> int:
    with db.read() as session:
        statement = select(func.count()).where(TaskMemory.is_consolidated.is_(False))
        return session.scalar(statement) or 0


class _IdleWatchingWorker(ConsolidationWorker):
    """Records which threads have gone idle (are about to wait for work)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle = threading.Condition()
        self.idle_threads: set[str] = set()

    def _idle_wait(self) -> float:
        wait = super()._idle_wait()
        with self._idle:
            self.idle_threads.add(threading.current_thread().name)
            self._idle.notify_all()
        return wait

    def wait_idle_threads(self, count: int, timeout: float = 20) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: len(self.idle_threads) >= count, timeout)


class _PollingWorker(ConsolidationWorker):
    """No NOTIFY listener, on either database: it finds work by polling only."""

    def _make_listener(self) -> QueueListener | None:
        return None


# --- the full loop ---------------------------------------------------------------------


def test_threshold_job_worker_consolidates_then_the_next_crossing_fires(
    db: DatabaseService, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os")
    settings = _settings(db)
    project = factories.project()
    memories = MemoryService(db, ConsolidationTriggerService(db, settings=settings))
    worker = _worker(db, settings)

    first = write_memories(memories, project.id, 10, OUTBOX)[-1]
    assert first is not None
    assert worker.run_once() is True

    job = stored_job(db, first)
    assert job.status is JobStatus.COMPLETED
    assert job.started_at is not None and job.finished_at is not None
    assert job.error is None
    result = dict(job.result or {})
    duration = result.pop("duration_seconds")
    assert isinstance(duration, float) and 0 <= duration < 60
    assert result == {
        "memories_processed": 10,
        "memories_consolidated": 10,
        "tiers": {"hot": 10, "warm": 0, "cold": 0},
        "tiers_refreshed": 0,
        "dry_run": False,
    }
    started = one(caplog, "job_started")
    assert (started.job_id, started.project_id, started.attempt) == (first, str(project.id), 1)
    assert _unconsolidated(db) == 0
    stored = stored_memories(db)
    assert {(m.is_consolidated, m.consolidation_job_id, m.tier) for m in stored} == {
        (True, first, MemoryTier.HOT)
    }
    assert all(m.consolidation_score == pytest.approx(0.6) for m in stored)  # decision, new
    assert worker.run_once() is False
    (task,) = factories.queue_rows()
    assert (task.task_type, task.task_id, task.state, task.attempts) == (
        CONSOLIDATION_TASK,
        str(first),
        TaskState.DONE,
        1,
    )

    again = write_memories(memories, project.id, 10, OUTBOX)
    assert again[:9] == [None] * 9
    assert again[9] is not None and again[9] != first


def test_tiers_use_age_and_the_projects_score_ranking(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    project = factories.project()
    old = T0 - timedelta(days=400)
    # 20 old warnings reused 0..19 times (distinct scores, all below the others),
    # 2 old error fixes reused a lot, 3 learnings from two months ago (tied).
    for reuse in range(20):
        factories.memories(
            project.id, 1, memory_type=MemoryType.WARNING, reused_count=reuse, learned_at=old
        )
    factories.memories(
        project.id, 2, memory_type=MemoryType.ERROR_FIX, reused_count=5000, learned_at=old
    )
    factories.memories(
        project.id, 3, memory_type=MemoryType.LEARNING, learned_at=T0 - timedelta(days=60)
    )
    triggers = ConsolidationTriggerService(db, settings=_settings(db), clock=clock)
    job_id = triggers.trigger_consolidation_sync(project.id)

    assert _worker(db, _settings(db), clock=clock).run_once() is True

    tiers = [m.tier for m in stored_memories(db)]
    # 25 memories. Top 10% = the 3rd best score and up: both error fixes and, tied at
    # 3rd place, all three learnings. Top 30% = the 8th best and up: the three most
    # reused warnings. Nothing is young enough to be hot or warm by age alone.
    assert tiers[20:] == [MemoryTier.HOT] * 5
    assert tiers[17:20] == [MemoryTier.WARM] * 3
    assert tiers[:17] == [MemoryTier.COLD] * 17
    assert (stored_job(db, job_id).result or {})["tiers"] == {"hot": 5, "warm": 3, "cold": 17}


def test_dry_run_reports_and_writes_no_memory(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    factories.memories(project.id, 7)
    triggers = ConsolidationTriggerService(db, settings=_settings(db))
    job_id = triggers.trigger_consolidation_sync(project.id, scope={"dry_run": True})
    before = [(m.is_consolidated, m.consolidation_score, m.tier) for m in stored_memories(db)]

    assert _worker(db, _settings(db)).run_once() is True

    job = stored_job(db, job_id)
    result = dict(job.result or {})
    result.pop("duration_seconds")
    assert (job.status, result) == (
        JobStatus.COMPLETED,
        {
            "memories_processed": 7,
            "memories_consolidated": 0,
            "tiers": {"hot": 7, "warm": 0, "cold": 0},
            "tiers_refreshed": 0,
            "dry_run": True,
        },
    )
    after = [(m.is_consolidated, m.consolidation_score, m.tier) for m in stored_memories(db)]
    assert after == before


def test_scope_narrows_what_is_consolidated(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    project = factories.project()
    factories.memories(
        project.id, 3, memory_type=MemoryType.ERROR_FIX, learned_at=T0 - timedelta(days=10)
    )
    factories.memories(
        project.id, 4, memory_type=MemoryType.ERROR_FIX, learned_at=T0 - timedelta(days=1)
    )
    factories.memories(
        project.id, 5, memory_type=MemoryType.WARNING, learned_at=T0 - timedelta(days=10)
    )
    triggers = ConsolidationTriggerService(db, settings=_settings(db), clock=clock)
    job_id = triggers.trigger_consolidation_sync(
        project.id, scope={"memory_types": ["error_fix"], "min_age_days": 7}
    )

    assert _worker(db, _settings(db), clock=clock).run_once() is True

    assert [m.is_consolidated for m in stored_memories(db)] == [True] * 3 + [False] * 9
    assert (stored_job(db, job_id).result or {})["memories_processed"] == 3


def test_rescoring_consolidated_memories_when_asked(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 4, is_consolidated=True)
    triggers = ConsolidationTriggerService(db, settings=_settings(db))
    skip = triggers.trigger_consolidation_sync(project.id)
    worker = _worker(db, _settings(db))
    assert worker.run_once() is True
    rescore = triggers.trigger_consolidation_sync(project.id, scope={"unconsolidated_only": False})
    assert worker.run_once() is True

    skipped = stored_job(db, skip)
    assert (skipped.status, (skipped.result or {})["memories_processed"]) == (
        JobStatus.COMPLETED,
        0,
    )
    assert (stored_job(db, rescore).result or {})["memories_processed"] == 4
    assert {m.consolidation_job_id for m in stored_memories(db)} == {rescore}


def test_a_cancelled_job_is_not_run(
    db: DatabaseService, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os")
    project = factories.project()
    factories.memories(project.id, 3)
    job_id = ConsolidationTriggerService(db, settings=_settings(db)).trigger_consolidation_sync(
        project.id
    )
    with db.transaction() as session:
        session.execute(update(ConsolidationJob).values(status=JobStatus.CANCELLED))

    assert _worker(db, _settings(db)).run_once() is True

    job = stored_job(db, job_id)
    assert (job.status, job.started_at, job.result) == (JobStatus.CANCELLED, None, None)
    assert _unconsolidated(db) == 3
    (task,) = factories.queue_rows()
    assert (task.state, task.attempts) == (TaskState.DONE, 1)
    assert one(caplog, "task_dropped").job_id == str(job_id)
    assert records(caplog, "job_started") == []


# --- failures, timeouts, stopping ------------------------------------------------------------


def test_a_failing_job_is_retried_then_failed_and_the_cooldown_holds(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os")
    settings = _settings(db, consolidation_cooldown=300)
    queue = TaskQueueService(
        clock=clock, max_attempts=3, retry=RetryPolicy(base_delay=timedelta(seconds=10))
    )
    triggers = ConsolidationTriggerService(db, settings=settings, task_queue=queue, clock=clock)
    memories = MemoryService(db, triggers, clock=clock)
    worker = _worker(db, settings, queue=queue, clock=clock)
    project = factories.project()

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ConsolidationRunner, "run", broken)
    job_id = write_memories(memories, project.id, 10, OUTBOX)[-1]
    assert job_id is not None

    statuses = []
    for _ in range(3):
        assert worker.run_once() is True
        statuses.append(stored_job(db, job_id).status)
        clock.advance(timedelta(minutes=1))  # past the backoff

    assert statuses == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.FAILED]
    assert [(r.job_id, r.attempt) for r in records(caplog, "job_started")] == [
        (job_id, 1),
        (job_id, 2),
        (job_id, 3),
    ]
    job = stored_job(db, job_id)
    assert job.error == "RuntimeError: disk full"
    assert job.finished_at == T0 + timedelta(minutes=2)
    (task,) = factories.queue_rows()
    assert (task.state, task.attempts, task.last_error) == (
        TaskState.DEAD,
        3,
        "RuntimeError: disk full",
    )
    assert worker.run_once() is False
    # The backlog is still over the threshold, but the cooldown keeps it quiet.
    clock.set(job.finished_at + timedelta(seconds=299))
    assert write_memories(memories, project.id, 1, OUTBOX) == [None]
    clock.advance(timedelta(seconds=1))
    assert write_memories(memories, project.id, 1, OUTBOX)[0] is not None


def test_a_job_failed_by_the_database_records_its_message_without_sql_or_parameters(
    db: DatabaseService, factories: Factories, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(db)
    queue = TaskQueueService(clock=clock, max_attempts=1)
    triggers = ConsolidationTriggerService(db, settings=settings, task_queue=queue, clock=clock)
    worker = _worker(db, settings, queue=queue, clock=clock)
    project = factories.project()

    def broken(*_: Any, **__: Any) -> Any:
        with db.read() as session:
            session.execute(
                text("SELECT * FROM no_such_table WHERE token = :token"),
                {"token": "SECRET-claim-token"},
            )

    monkeypatch.setattr(ConsolidationRunner, "run", broken)
    job_id = triggers.trigger_consolidation_sync(project.id)
    assert worker.run_once() is True

    job = stored_job(db, job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "no_such_table" in job.error
    assert "SELECT" not in job.error and "SECRET" not in job.error
    assert len(job.error) <= MAX_FAILURE_LENGTH


def test_an_overrunning_job_times_out_and_a_later_job_finishes_the_rest(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 100)
    settings = _settings(db, consolidation_timeout=175, worker_batch_size=10)
    triggers = ConsolidationTriggerService(db, settings=settings)
    first = triggers.trigger_consolidation_sync(project.id)
    # Every look at the timer: 25 s later. The deadline is set at 0 (175); the run
    # starts at 25; its score scan arms its heartbeat at 50 (every 20 s: a third of the
    # 60 s lease), finds it due at 75 and re-arms it at 100, and at its end finds it
    # due again at 125; then the batches: checked at 150, timed at 175, and checked
    # at 200: past the deadline.
    seconds = iter(range(0, 10_000, 25))

    worker = _worker(db, settings, timer=lambda: float(next(seconds)))
    assert worker.run_once() is True

    job = stored_job(db, first)
    assert job.status is JobStatus.TIMED_OUT
    done = (job.result or {})["memories_processed"]
    assert 0 < done < 100
    assert done % 10 == 0  # whole batches only
    assert job.error == (
        f"exceeded consolidation_timeout (175 s); {done} memories done, the rest left for a "
        "later job"
    )
    assert 100 - _unconsolidated(db) == done  # committed batches stay
    (task,) = factories.queue_rows()
    assert task.state is TaskState.DONE

    second = triggers.trigger_consolidation_sync(project.id)
    assert _worker(db, settings).run_once() is True

    assert stored_job(db, second).status is JobStatus.COMPLETED
    assert (stored_job(db, second).result or {})["memories_processed"] == 100 - done
    assert _unconsolidated(db) == 0


class _SteppedQueue(TaskQueueService):
    """A queue whose third lease renewal (the third batch's, inside its transaction)
    pauses until the test lets it go on."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches = 0
        self.paused = threading.Event()
        self.go_on = threading.Event()

    def extend_lease(self, **kwargs: Any) -> bool:
        held = super().extend_lease(**kwargs)
        self.batches += 1
        if self.batches == 3:
            self.paused.set()
            assert self.go_on.wait(30)
        return held


def test_stopping_finishes_the_batch_and_hands_the_job_back(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 50)
    settings = _settings(db, worker_batch_size=5)
    job_id = ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(
        project.id
    )
    queue = _SteppedQueue()
    worker = _worker(db, settings, queue=queue)

    worker.start()
    assert queue.paused.wait(30)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    # The stop has reached the worker: its next between-batch check says "stop".
    wait_for(lambda: worker.stopping, what="the worker to be told to stop")
    queue.go_on.set()
    stopper.join(30)

    assert not stopper.is_alive()
    assert not worker.running
    job = stored_job(db, job_id)
    assert (job.status, job.finished_at, job.error) == (JobStatus.PENDING, None, None)
    assert (job.result or {})["memories_processed"] == 15
    assert _unconsolidated(db) == 35
    (task,) = factories.queue_rows()
    assert (task.state, task.attempts, task.claimed_by) == (TaskState.QUEUED, 0, None)

    assert _worker(db, settings).run_once() is True  # resumes
    job = stored_job(db, job_id)
    assert (job.status, (job.result or {})["memories_processed"]) == (JobStatus.COMPLETED, 50)
    assert _unconsolidated(db) == 0


class _OvertakenWorker(ConsolidationWorker):
    """Between two batches, its lease expires and another worker claims the task (as
    if this one had stalled past its lease)."""

    def __init__(self, *args: Any, clock: FakeClock, overtaken_at: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, clock=clock, **kwargs)
        self.fake_clock = clock
        self.checks = 0
        self.overtaken_at = overtaken_at

    def _should_stop(self) -> bool:
        self.checks += 1
        if self.checks == self.overtaken_at:
            self.fake_clock.advance(timedelta(minutes=5))
            with self.db.transaction() as session:
                assert self.queue.reclaim_expired(session=session) == 1
                claimed = self.queue.claim(
                    session=session, task_types=[CONSOLIDATION_TASK], worker_id="the-other-worker"
                )
                assert len(claimed) == 1
        return super()._should_stop()


def test_a_worker_that_lost_its_lease_rolls_back_its_batch_and_stops(
    db: DatabaseService, factories: Factories, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    project = factories.project()
    factories.memories(project.id, 20)
    settings = _settings(db, worker_batch_size=5)
    job_id = ConsolidationTriggerService(
        db, settings=settings, clock=clock
    ).trigger_consolidation_sync(project.id)
    stale = _worker(db, settings, cls=_OvertakenWorker, clock=clock)

    assert stale.run_once() is True

    assert _unconsolidated(db) == 15  # the first batch only; the second rolled back
    job = stored_job(db, job_id)
    assert (job.status, (job.result or {})["memories_processed"]) == (JobStatus.RUNNING, 5)
    (task,) = factories.queue_rows()
    assert (task.state, task.claimed_by, task.attempts) == (
        TaskState.CLAIMED,
        "the-other-worker",
        2,
    )
    refused = one(caplog, "task_not_held")
    assert (refused.task_id, refused.worker) == (str(job_id), stale.worker_id)


def test_a_worker_overtaken_before_its_last_batch_does_not_end_the_job(
    db: DatabaseService, factories: Factories, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    project = factories.project()
    factories.memories(project.id, 10)
    settings = _settings(db, worker_batch_size=5)
    job_id = ConsolidationTriggerService(
        db, settings=settings, clock=clock
    ).trigger_consolidation_sync(project.id)
    # One batch, then the check before the last one (which also ends the job, with no
    # lease renewal of its own): taken over right there. Its completion is fenced.
    stale = _worker(db, settings, cls=_OvertakenWorker, clock=clock, overtaken_at=2)

    assert stale.run_once() is True

    assert _unconsolidated(db) == 5  # the last batch rolled back
    job = stored_job(db, job_id)
    assert (job.status, job.finished_at) == (JobStatus.RUNNING, None)  # left to the holder
    assert (job.result or {})["memories_processed"] == 5
    (task,) = factories.queue_rows()
    assert (task.state, task.claimed_by) == (TaskState.CLAIMED, "the-other-worker")
    assert one(caplog, "task_not_held").worker == stale.worker_id


def test_stop_wakes_every_idle_thread_at_once(db: DatabaseService) -> None:
    settings = _settings(db, worker_concurrency=8, worker_poll_interval=30)
    worker = _worker(db, settings, cls=_IdleWatchingWorker)
    worker.start()
    try:
        # Every thread is idle, waiting up to 30 s.
        assert worker.wait_idle_threads(8), worker.idle_threads
    finally:
        worker._wake.notify()  # a wake-up that some threads consume just before the stop
        began = time.monotonic()
        worker.stop(timeout=20)

    assert time.monotonic() - began < 10  # not the 30 s poll
    assert not worker.running


def test_worker_threads_pick_up_queued_jobs(db: DatabaseService, factories: Factories) -> None:
    ids = factories.projects(6)
    for project_id in ids:
        factories.memories(project_id, 3)
    settings = _settings(db, worker_concurrency=3)
    triggers = ConsolidationTriggerService(db, settings=settings)
    jobs = [triggers.trigger_consolidation_sync(project_id) for project_id in ids]
    worker = _worker(db, settings)

    worker.start()
    try:
        wait_for(
            lambda: all(stored_job(db, j).status is JobStatus.COMPLETED for j in jobs),
            timeout=60,
            what="every job to complete",
        )
    finally:
        worker.stop()

    assert _unconsolidated(db) == 0
    assert not worker.running
    assert {(t.state, t.attempts) for t in Factories(db).queue_rows()} == {(TaskState.DONE, 1)}


def test_a_worker_without_a_listener_finds_work_by_polling(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 3)
    settings = _settings(db, worker_poll_interval=0.05)
    worker = _worker(db, settings, cls=_PollingWorker)

    worker.start()
    try:
        assert worker.wait_listening(0) is True  # nothing to wait for
        job_id = ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(
            project.id
        )
        wait_for(
            lambda: stored_job(db, job_id).status is JobStatus.COMPLETED,
            timeout=30,
            what="the polled job to complete",
        )
    finally:
        worker.stop()

    assert _unconsolidated(db) == 0


@pytest.mark.postgres_only
def test_notify_wakes_an_idle_worker_long_before_its_poll(postgres_url: str) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    settings = AppSettings(database_url=postgres_url, worker_poll_interval=30)
    worker = _worker(db, settings, cls=_IdleWatchingWorker)
    worker.start()
    try:
        assert worker.wait_listening(10)
        assert worker.wait_idle_threads(1)  # the worker is now asleep for up to 30 s
        job_id = ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(
            project.id
        )
        wait_for(
            lambda: stored_job(db, job_id).status is JobStatus.COMPLETED,
            timeout=10,
            what="the job to complete well within the 30 s poll",
        )
    finally:
        worker.stop()
        db.dispose()


@pytest.mark.postgres_only
def test_two_workers_run_each_of_200_jobs_exactly_once(postgres_url: str) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    ids = factories.projects(200)
    for project_id in ids:
        factories.memories(project_id, 5)
    settings = AppSettings(
        database_url=postgres_url, worker_concurrency=2, worker_poll_interval=0.05
    )
    triggers = ConsolidationTriggerService(db, settings=settings)
    jobs = [triggers.trigger_consolidation_sync(project_id) for project_id in ids]
    engines = [DatabaseService(postgres_url) for _ in range(2)]
    workers = [_worker(engine, settings) for engine in engines]

    for worker in workers:
        worker.start()
    try:
        wait_for(
            lambda: (
                factories.count(ConsolidationJob, ConsolidationJob.status == JobStatus.COMPLETED)
                == 200
            ),
            timeout=120,
            what="200 completed jobs",
        )
    finally:
        for worker in workers:
            worker.stop()

    assert {(t.state, t.attempts) for t in factories.queue_rows()} == {(TaskState.DONE, 1)}
    processed = [(stored_job(db, j).result or {})["memories_processed"] for j in jobs]
    assert processed == [5] * 200
    owners = {m.project_id: m.consolidation_job_id for m in stored_memories(db)}
    assert owners == dict(zip(ids, jobs, strict=True))
    for engine in [*engines, db]:
        engine.dispose()


# --- a worker process killed mid-job -----------------------------------------------------------


@pytest.fixture
def big_job(db: DatabaseService, factories: Factories) -> Iterator[int]:
    project = factories.project()
    factories.memories(project.id, 20_000)
    settings = _settings(db)
    yield ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(project.id)


def test_a_killed_worker_process_leaves_the_job_to_another(
    db: DatabaseService, big_job: int, tmp_path: Path
) -> None:
    env = cli_env(
        tmp_path,
        database_url=db.url,
        worker_batch_size="20",
        worker_lease_seconds="2",
        worker_poll_interval="0.1",
    )
    victim = subprocess.Popen(
        [OMOI_OS, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: 20_000 - _unconsolidated(db) >= 500, timeout=60)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.wait(10)
    left = _unconsolidated(db)
    assert 0 < left < 20_000
    assert stored_job(db, big_job).status is JobStatus.RUNNING  # nobody is working on it now

    rescuer = subprocess.Popen(
        [OMOI_OS, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: stored_job(db, big_job).status is JobStatus.COMPLETED, timeout=120)
    finally:
        rescuer.send_signal(signal.SIGTERM)
        _, errors = rescuer.communicate(timeout=30)

    assert rescuer.returncode == 0, errors
    assert _unconsolidated(db) == 0
    job = stored_job(db, big_job)
    assert (job.result or {})["memories_processed"] == 20_000  # resumed, nothing twice
    with db.get_session() as session:
        task = session.scalars(select(QueuedTask)).one()
    assert (task.state, task.attempts) == (TaskState.DONE, 2)
    assert job.trigger_type is TriggerType.MANUAL


# --- a long step keeps its lease ------------------------------------------------------------


class _RivalReclaimingTimer:
    """The worker's timer. Each look at it is half a second of (fake) time, during which
    another worker looks for dead leases and reclaims what it finds: a long scan of a
    big project in miniature. The rival never waits for a lock: on SQLite it gives up
    while a batch holds the write lock, on PostgreSQL it skips the locked task."""

    def __init__(self, db: DatabaseService, clock: FakeClock, lease: timedelta) -> None:
        self._rival_db = DatabaseService(db.url)
        if self._rival_db.dialect == "sqlite":
            event.listen(self._rival_db.engine, "connect", _no_busy_wait)
        self._rival = TaskQueueService(clock=clock, lease=lease)
        self._clock = clock
        self.reclaimed = 0
        self.looks = 0

    def __call__(self) -> float:
        self._clock.advance(timedelta(seconds=0.5))
        self.looks += 1
        try:
            with self._rival_db.transaction() as session:
                self.reclaimed += self._rival.reclaim_expired(session=session)
        except OperationalError:  # SQLite: locked by the worker's batch; try next time
            pass
        return (self._clock() - T0).total_seconds()

    def close(self) -> None:
        self._rival_db.dispose()


def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout=0")


def _long_scan_worker(
    db: DatabaseService, clock: FakeClock, timer: _RivalReclaimingTimer
) -> ConsolidationWorker:
    settings = _settings(db, worker_lease_seconds=3, worker_batch_size=2000)
    queue = TaskQueueService(clock=clock, lease=timedelta(seconds=3))
    return _worker(db, settings, queue=queue, clock=clock, timer=timer)


def test_a_long_score_scan_keeps_the_lease_of_a_live_worker(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    project = factories.project()
    factories.memories(project.id, 6000)  # the scan looks at the timer every 1,000 rows
    timer = _RivalReclaimingTimer(db, clock, timedelta(seconds=3))
    worker = _long_scan_worker(db, clock, timer)
    job_id = ConsolidationTriggerService(
        db, settings=worker.settings, clock=clock
    ).trigger_consolidation_sync(project.id)

    assert worker.run_once() is True
    timer.close()

    assert timer.looks > 12  # the scan and the batches took far longer than the lease
    job = stored_job(db, job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.result is not None and job.result["memories_consolidated"] == 6000
    assert timer.reclaimed == 0  # never taken for dead
    (task,) = factories.queue_rows()
    assert (task.state, task.attempts) == (TaskState.DONE, 1)


def test_without_heartbeats_the_same_scan_loses_its_lease(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure the heartbeats prevent, reproduced with a short lease: a live worker
    whose scan outlasts its lease is reclaimed as dead, and its work is thrown away."""
    monkeypatch.setattr(worker_module, "HEARTBEATS_PER_LEASE", 1e-9)  # one beat a century
    project = factories.project()
    factories.memories(project.id, 6000)
    timer = _RivalReclaimingTimer(db, clock, timedelta(seconds=3))
    worker = _long_scan_worker(db, clock, timer)
    job_id = ConsolidationTriggerService(
        db, settings=worker.settings, clock=clock
    ).trigger_consolidation_sync(project.id)

    with caplog.at_level(logging.WARNING):
        assert worker.run_once() is True
    timer.close()

    assert timer.reclaimed == 1
    assert stored_job(db, job_id).status is JobStatus.RUNNING  # left for the next claim
    assert _unconsolidated(db) == 6000  # nothing it did was kept
    (task,) = factories.queue_rows()
    assert task.state == TaskState.QUEUED


def test_the_finished_job_log_line_names_tiers_by_their_values(
    db: DatabaseService, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(db)
    project = factories.project()
    factories.memories(project.id, 3)
    ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(project.id)
    worker = _worker(db, settings)

    with caplog.at_level(logging.INFO):
        assert worker.run_once() is True

    finished = one(caplog, "job_finished")
    assert finished.getMessage().endswith(
        "completed, 3 memories ({'hot': 3, 'warm': 0, 'cold': 0})"  # equal scores: all top 10%
    )
    assert "MemoryTier" not in caplog.text
