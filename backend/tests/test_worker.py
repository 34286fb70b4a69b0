"""ConsolidationWorker against real databases: the full trigger → job → worker loop,
retries, timeouts, stopping, crashes, and two workers sharing one queue."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from omoi_os.config import AppSettings
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
from omoi_os.services.consolidation.runner import ConsolidationRunner
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService, read_session
from omoi_os.services.memory import MemoryService, NewMemory
from omoi_os.services.task_queue import RetryPolicy, TaskQueueService

from .clocks import FakeClock
from .factories import T0, Factories
from .polling import wait_for
from .servers import OMOI_OS, cli_env


def _settings(db: DatabaseService, **overrides: Any) -> AppSettings:
    values: dict[str, Any] = {
        "database_url": db.url,
        "consolidation_threshold": 10,
        "consolidation_cooldown": 0,
        "worker_poll_interval": 0.05,
    }
    return AppSettings(**(values | overrides))


def _job(db: DatabaseService, job_id: int) -> ConsolidationJob:
    with read_session(db.session_factory) as session:
        job = session.get(ConsolidationJob, job_id)
        assert job is not None
        return job


def _memories(db: DatabaseService) -> list[TaskMemory]:
    with db.get_session() as session:
        return list(session.scalars(select(TaskMemory).order_by(TaskMemory.id)))


def _unconsolidated(db: DatabaseService) -> int:
    with read_session(db.session_factory) as session:
        statement = select(func.count()).where(TaskMemory.is_consolidated.is_(False))
        return session.scalar(statement) or 0


def _write(memories: MemoryService, project_id: uuid.UUID, count: int) -> list[int | None]:
    note = NewMemory(memory_type=MemoryType.DECISION, execution_summary="use the outbox")
    return [memories.create_memory_sync(project_id, note).triggered_job_id for _ in range(count)]


# --- the full loop ---------------------------------------------------------------------


def test_threshold_job_worker_consolidates_then_the_next_crossing_fires(
    db: DatabaseService, factories: Factories
) -> None:
    settings = _settings(db)
    project = factories.project()
    memories = MemoryService(db, ConsolidationTriggerService(db, settings=settings))
    worker = ConsolidationWorker(db, settings=settings)

    first = _write(memories, project.id, 10)[-1]
    assert first is not None
    assert worker.run_once() is True

    job = _job(db, first)
    assert job.status is JobStatus.COMPLETED
    assert job.started_at is not None and job.finished_at is not None
    assert (
        job.result
        == {
            "memories_processed": 10,
            "memories_consolidated": 10,
            "tiers": {"hot": 10, "warm": 0, "cold": 0},
            "duration_seconds": job.result["duration_seconds"],
            "dry_run": False,
        }
        if job.result
        else False
    )
    assert _unconsolidated(db) == 0
    stored = _memories(db)
    assert {(m.is_consolidated, m.consolidation_job_id, m.tier) for m in stored} == {
        (True, first, MemoryTier.HOT)
    }
    assert all(m.consolidation_score == pytest.approx(0.6) for m in stored)  # decision, new
    assert worker.run_once() is False
    (task,) = factories.queue_rows()
    assert (task.state, task.attempts) == (TaskState.DONE, 1)

    again = _write(memories, project.id, 10)
    assert again[:9] == [None] * 9
    assert again[9] is not None and again[9] != first


def test_tiers_use_age_and_the_projects_score_ranking(
    db: DatabaseService, factories: Factories
) -> None:
    clock = FakeClock(T0)
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

    ConsolidationWorker(db, settings=_settings(db), clock=clock).run_once()

    tiers = [m.tier for m in _memories(db)]
    # 25 memories. Top 10% = the 3rd best score and up: both error fixes and, tied at
    # 3rd place, all three learnings. Top 30% = the 8th best and up: the three most
    # reused warnings. Nothing is young enough to be hot or warm by age alone.
    assert tiers[20:] == [MemoryTier.HOT] * 5
    assert tiers[17:20] == [MemoryTier.WARM] * 3
    assert tiers[:17] == [MemoryTier.COLD] * 17
    assert (_job(db, job_id).result or {})["tiers"] == {"hot": 5, "warm": 3, "cold": 17}


def test_dry_run_reports_and_writes_no_memory(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    factories.memories(project.id, 7)
    triggers = ConsolidationTriggerService(db, settings=_settings(db))
    job_id = triggers.trigger_consolidation_sync(project.id, scope={"dry_run": True})
    before = [(m.is_consolidated, m.consolidation_score, m.tier) for m in _memories(db)]

    ConsolidationWorker(db, settings=_settings(db)).run_once()

    result = _job(db, job_id).result or {}
    assert (result["memories_processed"], result["memories_consolidated"], result["dry_run"]) == (
        7,
        0,
        True,
    )
    assert [(m.is_consolidated, m.consolidation_score, m.tier) for m in _memories(db)] == before


def test_scope_narrows_what_is_consolidated(db: DatabaseService, factories: Factories) -> None:
    clock = FakeClock(T0)
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
    triggers.trigger_consolidation_sync(
        project.id, scope={"memory_types": ["error_fix"], "min_age_days": 7}
    )

    ConsolidationWorker(db, settings=_settings(db), clock=clock).run_once()

    assert [m.is_consolidated for m in _memories(db)] == [True] * 3 + [False] * 9


def test_rescoring_consolidated_memories_when_asked(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 4, is_consolidated=True)
    triggers = ConsolidationTriggerService(db, settings=_settings(db))
    skip = triggers.trigger_consolidation_sync(project.id)
    worker = ConsolidationWorker(db, settings=_settings(db))
    worker.run_once()
    rescore = triggers.trigger_consolidation_sync(project.id, scope={"unconsolidated_only": False})
    worker.run_once()

    assert (_job(db, skip).result or {})["memories_processed"] == 0
    assert (_job(db, rescore).result or {})["memories_processed"] == 4
    assert {m.consolidation_job_id for m in _memories(db)} == {rescore}


def test_a_cancelled_job_is_not_run(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    factories.memories(project.id, 3)
    job_id = ConsolidationTriggerService(db, settings=_settings(db)).trigger_consolidation_sync(
        project.id
    )
    with db.transaction() as session:
        session.execute(update(ConsolidationJob).values(status=JobStatus.CANCELLED))

    assert ConsolidationWorker(db, settings=_settings(db)).run_once() is True

    assert _job(db, job_id).status is JobStatus.CANCELLED
    assert _unconsolidated(db) == 3
    assert factories.queue_rows()[0].state is TaskState.DONE


# --- failures, timeouts, stopping ------------------------------------------------------------


def test_a_failing_job_is_retried_then_failed_and_the_cooldown_holds(
    db: DatabaseService, factories: Factories, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    settings = _settings(db, consolidation_cooldown=300)
    queue = TaskQueueService(
        db, clock=clock, max_attempts=3, retry=RetryPolicy(base_delay=timedelta(seconds=10))
    )
    triggers = ConsolidationTriggerService(db, settings=settings, task_queue=queue, clock=clock)
    memories = MemoryService(db, triggers, clock=clock)
    worker = ConsolidationWorker(db, settings=settings, task_queue=queue, clock=clock)
    project = factories.project()

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ConsolidationRunner, "run", broken)
    job_id = _write(memories, project.id, 10)[-1]
    assert job_id is not None

    statuses = []
    for _ in range(3):
        assert worker.run_once() is True
        statuses.append(_job(db, job_id).status)
        clock.advance(timedelta(minutes=1))  # past the backoff

    assert statuses == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.FAILED]
    job = _job(db, job_id)
    assert job.error == "RuntimeError: disk full"
    (task,) = factories.queue_rows()
    assert (task.state, task.attempts) == (TaskState.DEAD, 3)
    # The backlog is still over the threshold, but the cooldown keeps it quiet.
    clock.set(job.finished_at + timedelta(seconds=299))  # type: ignore[operator]
    assert _write(memories, project.id, 1) == [None]
    clock.advance(timedelta(seconds=1))
    assert _write(memories, project.id, 1)[0] is not None


def test_an_overrunning_job_times_out_and_a_later_job_finishes_the_rest(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 100)
    settings = _settings(db, consolidation_timeout=60, worker_batch_size=10)
    triggers = ConsolidationTriggerService(db, settings=settings)
    first = triggers.trigger_consolidation_sync(project.id)
    seconds = iter(range(0, 10_000, 25))  # every look at the timer: 25 s later

    ConsolidationWorker(db, settings=settings, timer=lambda: float(next(seconds))).run_once()

    job = _job(db, first)
    assert job.status is JobStatus.TIMED_OUT
    assert job.error is not None and "consolidation_timeout (60 s)" in job.error
    done = (job.result or {})["memories_processed"]
    assert 0 < done < 100
    assert 100 - _unconsolidated(db) == done  # committed batches stay

    second = triggers.trigger_consolidation_sync(project.id)
    ConsolidationWorker(db, settings=settings).run_once()

    assert _job(db, second).status is JobStatus.COMPLETED
    assert (_job(db, second).result or {})["memories_processed"] == 100 - done
    assert _unconsolidated(db) == 0


class _SteppedWorker(ConsolidationWorker):
    """Pauses after its third batch until the test lets it go on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = 0
        self.paused = threading.Event()
        self.go_on = threading.Event()

    def _hold_lease(self, task: Any, session: Any) -> None:
        super()._hold_lease(task, session)
        if session is None:
            return  # the renewal after setup, not a batch
        self.batches += 1
        if self.batches == 3:
            self.paused.set()
            self.go_on.wait(10)


def test_stopping_finishes_the_batch_and_hands_the_job_back(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.memories(project.id, 50)
    settings = _settings(db, worker_batch_size=5)
    job_id = ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(
        project.id
    )
    worker = _SteppedWorker(db, settings=settings)

    worker.start()
    assert worker.paused.wait(10)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    time.sleep(0.1)
    worker.go_on.set()
    stopper.join(10)

    assert not worker.running
    job = _job(db, job_id)
    assert job.status is JobStatus.PENDING
    assert (job.result or {})["memories_processed"] == 15
    assert _unconsolidated(db) == 35
    (task,) = factories.queue_rows()
    assert (task.state, task.attempts, task.claimed_by) == (TaskState.QUEUED, 0, None)

    ConsolidationWorker(db, settings=settings).run_once()  # picked up again: resumes
    job = _job(db, job_id)
    assert (job.status, (job.result or {})["memories_processed"]) == (JobStatus.COMPLETED, 50)
    assert _unconsolidated(db) == 0


class _OvertakenWorker(ConsolidationWorker):
    """Between its first and second batch, its lease expires and another worker
    claims the task (as if this one had stalled past its lease)."""

    def __init__(self, *args: Any, clock: FakeClock, overtaken_at: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, clock=clock, **kwargs)
        self.fake_clock = clock
        self.checks = 0
        self.overtaken_at = overtaken_at

    def _keep_going(self) -> bool:
        self.checks += 1
        if self.checks == self.overtaken_at:
            self.fake_clock.advance(timedelta(minutes=5))
            self.queue.reclaim_expired()
            assert self.queue.claim(["consolidation"], "the-other-worker")
        return super()._keep_going()


def test_a_worker_that_lost_its_lease_rolls_back_its_batch_and_stops(
    db: DatabaseService, factories: Factories
) -> None:
    clock = FakeClock(T0)
    project = factories.project()
    factories.memories(project.id, 20)
    settings = _settings(db, worker_batch_size=5)
    job_id = ConsolidationTriggerService(
        db, settings=settings, clock=clock
    ).trigger_consolidation_sync(project.id)

    assert _OvertakenWorker(db, settings=settings, clock=clock).run_once() is True

    assert _unconsolidated(db) == 15  # the first batch only; the second rolled back
    job = _job(db, job_id)
    assert (job.status, (job.result or {})["memories_processed"]) == (JobStatus.RUNNING, 5)
    (task,) = factories.queue_rows()
    assert (task.state, task.claimed_by) == (TaskState.CLAIMED, "the-other-worker")


def test_a_worker_overtaken_after_its_last_batch_does_not_end_the_job(
    db: DatabaseService, factories: Factories
) -> None:
    clock = FakeClock(T0)
    project = factories.project()
    factories.memories(project.id, 10)
    settings = _settings(db, worker_batch_size=5)
    job_id = ConsolidationTriggerService(
        db, settings=settings, clock=clock
    ).trigger_consolidation_sync(project.id)
    # Two batches, then the check before the (empty) third: taken over right there.
    stale = _OvertakenWorker(db, settings=settings, clock=clock, overtaken_at=3)

    assert stale.run_once() is True

    assert _unconsolidated(db) == 0
    assert _job(db, job_id).status is JobStatus.RUNNING  # left to the worker that holds it
    (task,) = factories.queue_rows()
    assert (task.state, task.claimed_by) == (TaskState.CLAIMED, "the-other-worker")


def test_stop_wakes_every_idle_thread_at_once(db: DatabaseService) -> None:
    worker = ConsolidationWorker(
        db, settings=_settings(db, worker_concurrency=8, worker_poll_interval=30)
    )
    worker.start()
    time.sleep(0.3)  # every thread is idle, waiting up to 30 s
    worker._wake.notify()  # a wake-up that some threads consume just before the stop
    began = time.monotonic()
    worker.stop(timeout=10)

    assert time.monotonic() - began < 3
    assert not worker.running


def test_worker_threads_pick_up_queued_jobs(db: DatabaseService, factories: Factories) -> None:
    ids = factories.projects(6)
    for project_id in ids:
        factories.memories(project_id, 3)
    settings = _settings(db, worker_concurrency=3)
    triggers = ConsolidationTriggerService(db, settings=settings)
    jobs = [triggers.trigger_consolidation_sync(project_id) for project_id in ids]
    worker = ConsolidationWorker(db, settings=settings)

    worker.start()
    try:
        wait_for(lambda: all(_job(db, j).status is JobStatus.COMPLETED for j in jobs))
    finally:
        worker.stop()

    assert _unconsolidated(db) == 0
    assert not worker.running


@pytest.mark.postgres_only
def test_notify_wakes_an_idle_worker_long_before_its_poll(postgres_url: str) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    settings = AppSettings(database_url=postgres_url, worker_poll_interval=30)
    worker = ConsolidationWorker(db, settings=settings)
    worker.start()
    try:
        assert worker.wait_listening(5)
        time.sleep(0.2)  # the worker is now asleep for up to 30 s
        job_id = ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(
            project.id
        )
        wait_for(lambda: _job(db, job_id).status is JobStatus.COMPLETED, timeout=5)
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
    workers = [ConsolidationWorker(engine, settings=settings) for engine in engines]

    for worker in workers:
        worker.start()
    try:
        wait_for(
            lambda: (
                Factories(db).count(
                    ConsolidationJob, ConsolidationJob.status == JobStatus.COMPLETED
                )
                == 200
            ),
            timeout=60,
        )
    finally:
        for worker in workers:
            worker.stop()

    assert {(t.state, t.attempts) for t in factories.queue_rows()} == {(TaskState.DONE, 1)}
    processed = [(_job(db, j).result or {})["memories_processed"] for j in jobs]
    assert processed == [5] * 200
    owners = {m.project_id: m.consolidation_job_id for m in _memories(db)}
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
    assert _job(db, big_job).status is JobStatus.RUNNING  # nobody is working on it now

    rescuer = subprocess.Popen(
        [OMOI_OS, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: _job(db, big_job).status is JobStatus.COMPLETED, timeout=120)
    finally:
        rescuer.send_signal(signal.SIGTERM)
        _, errors = rescuer.communicate(timeout=30)

    assert rescuer.returncode == 0, errors
    assert _unconsolidated(db) == 0
    job = _job(db, big_job)
    assert (job.result or {})["memories_processed"] == 20_000  # resumed, nothing twice
    with db.get_session() as session:
        task = session.scalars(select(QueuedTask)).one()
    assert (task.state, task.attempts) == (TaskState.DONE, 2)
    assert job.trigger_type is TriggerType.MANUAL
