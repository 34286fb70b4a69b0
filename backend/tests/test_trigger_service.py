"""ConsolidationTriggerService against real databases: every trigger fires exactly
once, rejected calls write nothing, and the scheduler starts and stops cleanly."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from omoi_os.config import AppSettings
from omoi_os.models import (
    ConsolidationJob,
    JobStatus,
    MemoryType,
    QueuedTask,
    TaskMemory,
    TaskState,
    TriggerType,
)
from omoi_os.services.consolidation import jobs as jobs_sql
from omoi_os.services.consolidation.decisions import CatchUp
from omoi_os.services.consolidation.errors import (
    ConsolidationAlreadyActive,
    ProjectInactive,
    ProjectNotFound,
)
from omoi_os.services.consolidation.jobs import CONSOLIDATION_TASK
from omoi_os.services.consolidation.trigger_service import (
    SCHEDULED_JOB_ID,
    TIMEOUT_GRACE,
    ConsolidationTriggerService,
)
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, NewMemory

from .clocks import FakeClock
from .factories import T0, Factories
from .polling import wait_for
from .servers import run_python

MakeTriggers = Callable[..., ConsolidationTriggerService]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def make_triggers(db: DatabaseService, clock: FakeClock) -> MakeTriggers:
    """A trigger service on the test database; settings can be overridden."""

    def make(**settings: Any) -> ConsolidationTriggerService:
        defaults: dict[str, Any] = {"database_url": db.url, "consolidation_threshold": 10}
        return ConsolidationTriggerService(
            db, settings=AppSettings(**(defaults | settings)), clock=clock, stop_timeout=5
        )

    return make


def _jobs(db: DatabaseService, project_id: uuid.UUID | None = None) -> list[ConsolidationJob]:
    with db.get_session() as session:
        statement = select(ConsolidationJob).order_by(ConsolidationJob.id)
        if project_id is not None:
            statement = statement.where(ConsolidationJob.project_id == project_id)
        return list(session.scalars(statement))


def _finish(db: DatabaseService, job_id: int, when: Any, *, consolidate: bool = False) -> None:
    """Stand in for the worker: end the job (and optionally consolidate everything)."""
    with db.transaction() as session:
        session.execute(
            update(ConsolidationJob)
            .where(ConsolidationJob.id == job_id)
            .values(status=JobStatus.COMPLETED, started_at=when, finished_at=when)
        )
        if consolidate:
            session.execute(update(TaskMemory).values(is_consolidated=True, consolidated_at=when))


def _write(memories: MemoryService, project_id: uuid.UUID, count: int) -> list[int | None]:
    note = NewMemory(memory_type=MemoryType.LEARNING, execution_summary="lesson")
    return [memories.create_memory_sync(project_id, note).triggered_job_id for _ in range(count)]


# --- the task card's verification script ----------------------------------------------

VERIFICATION_SCRIPT = """
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService

db = DatabaseService()
trigger_svc = ConsolidationTriggerService(db.get_session())
trigger_svc.start()
print('Scheduler started')
trigger_svc.stop()
print('Scheduler stopped')
"""


@pytest.mark.parametrize("migrated", [True, False], ids=["migrated", "fresh-database"])
def test_task_card_verification_script_runs_verbatim(
    database_url: str, migrated: bool, tmp_path: Any
) -> None:
    backend = Path(__file__).resolve().parents[1]
    settings = {"database_url": database_url} if migrated else {}

    result = run_python(VERIFICATION_SCRIPT, cwd=backend, home=tmp_path, **settings)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Scheduler started", "Scheduler stopped"]
    assert "Traceback" not in result.stderr
    if migrated:
        assert result.stderr == ""


# --- scheduled ticks ------------------------------------------------------------------


def test_a_tick_creates_one_job_and_one_queue_row_per_active_project(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    active = factories.projects(500)
    factories.projects(50, is_active=False)
    busy = active[0]
    factories.job(busy, status=JobStatus.RUNNING)
    triggers = make_triggers()
    tick = T0 + timedelta(hours=14)

    first = triggers.run_scheduled_tick(tick)
    again = triggers.run_scheduled_tick(tick)

    assert (first.created, first.skipped_active, first.already_recorded) == (499, 1, False)
    assert (again.created, again.already_recorded) == (0, True)
    scheduled = [job for job in _jobs(db) if job.trigger_type is TriggerType.SCHEDULED]
    assert len(scheduled) == 499
    assert {job.project_id for job in scheduled} == set(active) - {busy}
    assert {(job.scheduled_for, job.status, job.triggered_by) for job in scheduled} == {
        (tick, JobStatus.PENDING, "scheduler")
    }
    rows = factories.queue_rows()
    assert sorted(row.task_id for row in rows) == sorted(str(job.id) for job in scheduled)
    assert {(row.task_type, row.state, row.payload["trigger_type"]) for row in rows} == {
        (CONSOLIDATION_TASK, TaskState.QUEUED, "scheduled")
    }


def test_the_next_tick_skips_projects_whose_job_is_still_active(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    projects = factories.projects(3)
    triggers = make_triggers()
    first = triggers.run_scheduled_tick(T0)
    done = _jobs(db, projects[0])[0]
    _finish(db, done.id, T0 + timedelta(minutes=5))

    second = triggers.run_scheduled_tick(T0 + timedelta(days=1))

    assert (first.created, second.created, second.skipped_active) == (3, 1, 2)
    assert [job.scheduled_for for job in _jobs(db, projects[0])] == [T0, T0 + timedelta(days=1)]


@pytest.mark.postgres_only
def test_two_schedulers_running_the_same_tick_create_one_job_per_project(
    postgres_url: str,
) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    projects = factories.projects(2000)
    settings = AppSettings(database_url=postgres_url)
    engines = [DatabaseService(postgres_url) for _ in range(2)]
    replicas = [ConsolidationTriggerService(engine, settings=settings) for engine in engines]
    tick = T0 + timedelta(hours=2)
    barrier = threading.Barrier(2)

    def run(service: ConsolidationTriggerService) -> int:
        barrier.wait()
        return service.run_scheduled_tick(tick).created

    with ThreadPoolExecutor(2) as pool:
        created = list(pool.map(run, replicas))

    jobs = _jobs(db)
    assert sum(created) == 2000
    assert len(jobs) == 2000
    assert {job.project_id for job in jobs} == set(projects)
    assert factories.count(QueuedTask) == 2000
    for engine in [*engines, db]:
        engine.dispose()


# --- threshold ---------------------------------------------------------------------------


def test_threshold_fires_once_on_the_crossing_insert(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    project = factories.project()
    memories = MemoryService(db, make_triggers(consolidation_threshold=10))

    below = _write(memories, project.id, 9)
    crossing = _write(memories, project.id, 1)
    beyond = _write(memories, project.id, 50)

    assert below == [None] * 9
    assert crossing[0] is not None
    assert beyond == [None] * 50
    (job,) = _jobs(db)
    assert (job.id, job.trigger_type, job.triggered_by) == (
        crossing[0],
        TriggerType.THRESHOLD,
        "threshold",
    )
    assert job.scope == {"unconsolidated_only": True, "dry_run": False}
    assert factories.count(TaskMemory) == 60
    assert [row.task_id for row in factories.queue_rows()] == [str(job.id)]


def test_threshold_waits_for_the_cooldown_then_fires_again(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    memories = MemoryService(db, make_triggers(consolidation_cooldown=300), clock=clock)
    (first,) = [job for job in _write(memories, project.id, 10) if job]
    # The job fails: nothing consolidated, the backlog stays over the threshold.
    _finish(db, first, clock())

    clock.advance(timedelta(seconds=299))
    assert _write(memories, project.id, 1) == [None]
    clock.advance(timedelta(seconds=1))
    (second,) = _write(memories, project.id, 1)

    assert second is not None and second != first
    assert len(_jobs(db)) == 2


def test_threshold_fires_again_after_consolidation_and_a_new_crossing(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    memories = MemoryService(db, make_triggers(consolidation_cooldown=0), clock=clock)
    (first,) = [job for job in _write(memories, project.id, 10) if job]
    _finish(db, first, clock(), consolidate=True)

    again = _write(memories, project.id, 10)

    assert again[:9] == [None] * 9
    assert again[9] is not None and again[9] != first


def test_threshold_ignores_inactive_projects(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    project = factories.project(is_active=False)
    memories = MemoryService(db, make_triggers())

    assert _write(memories, project.id, 15) == [None] * 15
    assert _jobs(db) == []


def test_threshold_debounce_delays_when_the_job_can_be_claimed(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_debounce=60)
    factories.memories(project.id, 10)

    job_id = triggers.check_threshold_triggers_sync(project.id)

    assert job_id is not None
    assert triggers.task_queue.claim([CONSOLIDATION_TASK], "worker") == []
    clock.advance(timedelta(seconds=60))
    (task,) = triggers.task_queue.claim([CONSOLIDATION_TASK], "worker")
    assert task.task_id == str(job_id)


@pytest.mark.postgres_only
def test_32_threads_crossing_at_once_create_exactly_one_job(postgres_url: str) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    factories.memories(project.id, 100)
    settings = AppSettings(database_url=postgres_url, consolidation_threshold=100)
    triggers = ConsolidationTriggerService(db, settings=settings)
    barrier = threading.Barrier(32)

    def check(_: int) -> int | None:
        barrier.wait()
        return triggers.check_threshold_triggers_sync(project.id)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(check, range(32)))

    created = [job_id for job_id in results if job_id is not None]
    assert len(created) == 1
    assert [job.id for job in _jobs(db)] == created
    assert factories.count(QueuedTask) == 1
    db.dispose()


def test_a_failing_threshold_check_never_loses_the_memory(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = factories.project()

    class BrokenTriggers(ConsolidationTriggerService):
        def check_threshold_triggers_sync(self, project_id: Any) -> int | None:
            raise RuntimeError("the database hiccuped")

    broken = BrokenTriggers(db, settings=make_triggers().settings)
    memories = MemoryService(db, broken)
    note = NewMemory(memory_type=MemoryType.ERROR_FIX, execution_summary="fixed it")

    with caplog.at_level(logging.ERROR):
        stored = memories.create_memory_sync(project.id, note)

    assert (stored.triggered_job_id, stored.threshold_check_failed) == (None, True)
    assert factories.count(TaskMemory) == 1
    assert f"memory {stored.memory.id} of project {project.id} failed" in caplog.text


# --- manual -----------------------------------------------------------------------------


def test_manual_trigger_records_scope_and_principal(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
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

    (job,) = _jobs(db)
    assert (job.id, job.trigger_type, job.triggered_by, job.status) == (
        job_id,
        TriggerType.MANUAL,
        "alice",
        JobStatus.PENDING,
    )
    assert job.scope == {"memory_types": ["decision"], "unconsolidated_only": True, "dry_run": True}
    assert [row.task_id for row in factories.queue_rows()] == [str(job_id)]
    assert f"for project {project.id}: created job {job_id} (by alice)" in caplog.text


def test_manual_trigger_ignores_the_cooldown(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=3600)
    first = triggers.trigger_consolidation_sync(project.id)
    _finish(db, first, clock())

    assert triggers.trigger_consolidation_sync(project.id) != first


def test_manual_trigger_while_a_job_is_active_reports_it_and_writes_nothing(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    project = factories.project()
    triggers = make_triggers()
    active = triggers.trigger_consolidation_sync(project.id)

    with pytest.raises(ConsolidationAlreadyActive) as excinfo:
        triggers.trigger_consolidation_sync(project.id, triggered_by="bob")

    assert excinfo.value.active_job_id == active
    assert str(active) in str(excinfo.value)
    assert len(_jobs(db)) == 1
    assert factories.count(QueuedTask) == 1


@pytest.mark.parametrize(
    ("scope", "error"),
    [({"bogus": 1}, ValidationError), ({"min_age_days": -3}, ValidationError)],
)
def test_rejected_manual_triggers_write_nothing(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    scope: dict[str, Any],
    error: type[Exception],
) -> None:
    project = factories.project()
    inactive = factories.project(is_active=False)
    triggers = make_triggers()

    with pytest.raises(error):
        triggers.trigger_consolidation_sync(project.id, scope=scope)
    with pytest.raises(ProjectNotFound, match="does not exist"):
        triggers.trigger_consolidation_sync(uuid.uuid4())
    with pytest.raises(ProjectNotFound):
        triggers.trigger_consolidation_sync("not-a-uuid")
    with pytest.raises(ProjectInactive, match="is inactive"):
        triggers.trigger_consolidation_sync(inactive.id)

    assert _jobs(db) == []
    assert factories.count(QueuedTask) == 0


def test_scheduled_jobs_only_come_from_ticks(
    make_triggers: MakeTriggers, factories: Factories
) -> None:
    with pytest.raises(ValueError, match="run_scheduled_tick"):
        make_triggers().trigger_consolidation_sync(factories.project().id, TriggerType.SCHEDULED)


@pytest.mark.asyncio
async def test_async_forms_run_off_the_event_loop(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    project = factories.project()
    factories.memories(project.id, 9)
    triggers = make_triggers()
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = triggers.trigger_consolidation_sync

    def spy(*args: Any) -> int:
        seen.append(threading.get_ident())
        return original(*args)

    triggers.trigger_consolidation_sync = spy  # type: ignore[method-assign]

    assert await triggers.check_threshold_triggers(project.id) is None
    job_id = await triggers.trigger_consolidation(project.id, TriggerType.MANUAL)

    assert [job.id for job in _jobs(db)] == [job_id]
    assert seen and loop_thread not in seen


# --- catch-up after downtime ----------------------------------------------------------------


def test_a_missed_tick_inside_the_grace_runs_once_at_start(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    factories.projects(4)
    # Daily at 02:00 UTC; it is 02:40, and nothing ran at 02:00.
    clock.set(T0.replace(hour=2, minute=40))
    triggers = make_triggers(consolidation_schedule="0 2 * * *", consolidation_misfire_grace=3600)

    triggers.start()
    try:
        wait_for(lambda: len(_jobs(db)) == 4)
    finally:
        triggers.stop()

    assert {job.scheduled_for for job in _jobs(db)} == {T0.replace(hour=2, minute=0)}
    assert triggers.catch_up_missed_tick() is CatchUp.NOT_NEEDED  # it is recorded now
    assert len(_jobs(db)) == 4


def test_a_missed_tick_older_than_the_grace_is_skipped_and_logged(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    factories.projects(2)
    clock.set(T0.replace(hour=4, minute=0, second=1))
    triggers = make_triggers(consolidation_schedule="0 2 * * *", consolidation_misfire_grace=7200)

    with caplog.at_level(logging.INFO):
        assert triggers.catch_up_missed_tick() is CatchUp.TOO_OLD

    assert _jobs(db) == []
    assert "missed tick 2026-01-05T02:00:00+00:00 is older than" in caplog.text


def test_three_missed_ticks_produce_one_run(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    factories.projects(3)
    # Every 10 minutes; 12:00, 12:10 and 12:20 passed while nothing ran.
    clock.set(T0.replace(minute=25))
    triggers = make_triggers(
        consolidation_schedule="*/10 * * * *", consolidation_misfire_grace=3600
    )

    assert triggers.catch_up_missed_tick() is CatchUp.RUN

    assert {job.scheduled_for for job in _jobs(db)} == {T0.replace(minute=20)}
    assert len(_jobs(db)) == 3


def test_a_tick_that_found_every_project_busy_is_not_run_again(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    busy = factories.job(project.id, status=JobStatus.RUNNING)
    triggers = make_triggers(consolidation_schedule="0 2 * * *")
    tick = T0.replace(hour=2, minute=0)
    assert triggers.run_scheduled_tick(tick).created == 0
    _finish(db, busy.id, tick + timedelta(minutes=10))

    clock.set(tick + timedelta(minutes=40))  # a restart inside the grace
    assert triggers.catch_up_missed_tick() is CatchUp.NOT_NEEDED

    assert [job.trigger_type for job in _jobs(db)] == [TriggerType.MANUAL]


def test_a_tick_whose_run_failed_is_retried_by_the_periodic_check(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    factories.projects(3)
    clock.set(T0.replace(hour=2, minute=0))
    triggers = make_triggers(consolidation_schedule="0 2 * * *")
    real_insert = jobs_sql.insert_tick_jobs

    def failing_insert(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("connection reset")

    monkeypatch.setattr(jobs_sql, "insert_tick_jobs", failing_insert)
    with pytest.raises(RuntimeError):
        triggers.run_due_tick()
    assert _jobs(db) == []  # the whole tick rolled back, its record too
    monkeypatch.setattr(jobs_sql, "insert_tick_jobs", real_insert)

    clock.advance(timedelta(seconds=30))
    with caplog.at_level(logging.INFO):
        triggers.maintain()

    assert len(_jobs(db)) == 3
    assert "catching up missed tick 2026-01-05T02:00:00+00:00" in caplog.text
    triggers.maintain()
    assert len(_jobs(db)) == 3


@pytest.mark.postgres_only
def test_stop_cancels_a_tick_stuck_on_a_lock_and_it_rolls_back(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    db = DatabaseService(postgres_url)
    Factories(db).projects(5)
    triggers = ConsolidationTriggerService(
        db, settings=AppSettings(database_url=postgres_url), stop_timeout=0.5
    )
    tick = T0.replace(hour=2)
    blocker = psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    # Another run holds this tick's record, uncommitted: ours must wait for it.
    blocker.execute("INSERT INTO consolidation_ticks VALUES (%s, now(), 0)", (tick,))
    triggers.start()
    stuck = threading.Thread(target=triggers._guarded(lambda: triggers.run_scheduled_tick(tick)))
    stuck.start()
    time.sleep(0.5)

    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        triggers.stop()
    stopped_in = time.monotonic() - began
    stuck.join(5)
    blocker.rollback()
    blocker.close()

    assert stopped_in < 3
    assert not stuck.is_alive()
    assert "by cancelling 1 statement(s); they rolled back" in caplog.text
    assert _jobs(db) == []
    db.dispose()


# --- sweeper ------------------------------------------------------------------------------


def test_sweeper_times_out_an_overrunning_job_and_frees_the_project(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_timeout=600)
    job_id = triggers.trigger_consolidation_sync(project.id)
    (task,) = triggers.task_queue.claim([CONSOLIDATION_TASK], "worker-that-dies")
    with db.transaction() as session:
        session.execute(
            update(ConsolidationJob).values(status=JobStatus.RUNNING, started_at=clock())
        )

    clock.advance(timedelta(seconds=600) + TIMEOUT_GRACE)
    assert triggers.sweep() == []
    clock.advance(timedelta(seconds=1))
    assert triggers.sweep() == [job_id]

    (job,) = _jobs(db)
    assert (job.status, job.finished_at) == (JobStatus.TIMED_OUT, clock())
    assert "consolidation_timeout (600 s)" in (job.error or "")
    (row,) = factories.queue_rows()
    assert row.state == TaskState.DEAD
    assert triggers.task_queue.complete(task, "worker-that-dies") is False
    assert triggers.trigger_consolidation_sync(project.id) != job_id


def test_sweeper_fails_a_job_whose_queue_task_died(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers()
    job_id = triggers.trigger_consolidation_sync(project.id)
    with db.transaction() as session:
        session.execute(update(QueuedTask).values(state=TaskState.DEAD, last_error="boom"))

    assert triggers.sweep() == [job_id]

    (job,) = _jobs(db)
    assert (job.status, job.error) == (JobStatus.FAILED, "queue gave up: boom")


# --- lifecycle ------------------------------------------------------------------------------


def _scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("APScheduler")]


def test_start_and_stop_are_idempotent_in_any_order(make_triggers: MakeTriggers) -> None:
    triggers = make_triggers()

    triggers.stop()  # never started
    triggers.start()
    triggers.start()
    assert triggers.running
    triggers.stop()
    triggers.stop()
    assert not triggers.running
    triggers.start()  # and again after a stop
    assert triggers.running
    triggers.stop()

    wait_for(lambda: _scheduler_threads() == [])


@pytest.mark.asyncio
async def test_start_inside_a_running_event_loop(make_triggers: MakeTriggers) -> None:
    triggers = make_triggers()

    triggers.start()
    assert triggers.running
    assert triggers.next_run_time() == T0.replace(hour=2) + timedelta(days=1)
    await asyncio.to_thread(triggers.stop)

    assert not triggers.running


def test_stop_is_bounded_while_a_callback_is_still_running(
    make_triggers: MakeTriggers, caplog: pytest.LogCaptureFixture
) -> None:
    triggers = make_triggers()
    entered, release = threading.Event(), threading.Event()

    def slow_catch_up() -> CatchUp:
        entered.set()
        release.wait(10)
        return CatchUp.NOT_NEEDED

    triggers.catch_up_at_start = slow_catch_up  # type: ignore[method-assign]
    triggers.start()
    assert entered.wait(5)

    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        triggers.stop(timeout=0.3)
    waited = time.monotonic() - began
    release.set()

    assert 0.3 <= waited < 3
    assert "1 callback(s) still running after 0.3 s (0 statement(s) cancelled)" in caplog.text
    assert not triggers.running


def test_a_failing_tick_is_logged_and_the_schedule_keeps_going(
    make_triggers: MakeTriggers, caplog: pytest.LogCaptureFixture
) -> None:
    triggers = make_triggers()
    failed = threading.Event()

    def broken_tick() -> None:
        failed.set()
        raise RuntimeError("database exploded")

    triggers.run_due_tick = broken_tick  # type: ignore[method-assign]
    triggers.start()
    try:
        scheduler = triggers._scheduler  # the APScheduler instance: made to fire now
        assert scheduler is not None
        scheduler.modify_job(SCHEDULED_JOB_ID, next_run_time=datetime.now(UTC))
        with caplog.at_level(logging.ERROR):
            assert failed.wait(5)
            wait_for(lambda: "consolidation broken_tick failed" in caplog.text)
        job = scheduler.get_job(SCHEDULED_JOB_ID)
        assert job is not None and job.next_run_time > datetime.now(UTC)
        assert any(t.name == "APScheduler" and t.is_alive() for t in threading.enumerate())
    finally:
        triggers.stop()
    assert "database exploded" in caplog.text
