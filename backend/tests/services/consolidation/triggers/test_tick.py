"""The scheduled trigger (triggers/tick.py): one run of a tick writes a job and its queue
task for every active project without an active job, once per tick however many runs
or replicas fire it; `run_due` is the one catch-up policy (at start, on the tick's own
timer, in the periodic pass). A paused schedule records its ticks as passed over; a
paused project is passed over and counted."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from omoi_os.config import AppSettings
from omoi_os.models import (
    JobStatus,
    QueuedTask,
    TaskState,
    TriggerType,
)
from omoi_os.services.consolidation.decisions import CatchUp
from omoi_os.services.consolidation.schedule_service import ScheduleService
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.triggers.tick import TickResult
from omoi_os.services.database import DatabaseService
from omoi_os.services.projects import ProjectService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import ticks as tick_store
from omoi_os.store.jobs import CONSOLIDATION_TASK, task_id_for_job
from tests.support.clocks import FakeClock
from tests.support.consolidation import MakeTriggers, finish_job, trigger_count
from tests.support.factories import T0, Factories
from tests.support.logs import one, records
from tests.support.polling import wait_for
from tests.support.rows import stored_jobs, stored_ticks


def _outcome(result: TickResult) -> tuple[int, int, bool]:
    return (result.created, result.skipped_active, result.already_recorded)


# --- one run of a tick ------------------------------------------------------------------


def test_a_tick_creates_one_job_and_one_queue_row_per_active_project(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    active = factories.projects(500, new_memories=1)
    factories.projects(50, is_active=False)
    busy = active[0]
    running = factories.job(busy, status=JobStatus.RUNNING)
    triggers = make_triggers()
    tick = T0 + timedelta(hours=14)

    first = triggers.run_scheduled_tick_sync(tick)
    again = triggers.run_scheduled_tick_sync(tick)

    assert (first.tick, _outcome(first)) == (tick, (499, 1, False))
    assert _outcome(again) == (0, 0, True)
    scheduled = [job for job in stored_jobs(db) if job.trigger_type is TriggerType.SCHEDULED]
    assert len(scheduled) == 499
    assert {job.project_id for job in scheduled} == set(active) - {busy}
    assert {
        (job.scheduled_for, job.status, job.triggered_by, job.created_at) for job in scheduled
    } == {(tick, JobStatus.PENDING, "scheduler", clock())}
    assert [job.scope for job in scheduled] == [
        {"unconsolidated_only": True, "dry_run": False}
    ] * 499
    assert [job.id for job in stored_jobs(db, busy)] == [running.id]
    rows = factories.queue_rows()
    assert sorted(row.task_id for row in rows) == sorted(
        task_id_for_job(job.id) for job in scheduled
    )
    assert {(row.task_type, row.state, row.available_at) for row in rows} == {
        (CONSOLIDATION_TASK, TaskState.QUEUED, clock())
    }
    assert stored_ticks(db) == [(tick, 499)]
    ran = one(caplog, "tick_ran")
    assert (ran.tick, ran.jobs_created, ran.skipped_active, ran.already_recorded) == (
        tick.isoformat(),
        499,
        1,
        False,
    )
    assert one(caplog, "tick_already_run").tick == tick.isoformat()


def test_the_next_tick_skips_projects_whose_job_is_still_active(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    projects = factories.projects(3, new_memories=1)
    triggers = make_triggers()
    first = triggers.run_scheduled_tick_sync(T0)
    (done,) = stored_jobs(db, projects[0])
    finish_job(db, done.id, T0 + timedelta(minutes=5))

    second = triggers.run_scheduled_tick_sync(T0 + timedelta(days=1))

    assert _outcome(first) == (3, 0, False)
    assert _outcome(second) == (1, 2, False)
    assert [job.scheduled_for for job in stored_jobs(db, projects[0])] == [
        T0,
        T0 + timedelta(days=1),
    ]
    for busy in projects[1:]:
        assert [job.scheduled_for for job in stored_jobs(db, busy)] == [T0]
    assert stored_ticks(db) == [(T0, 3), (T0 + timedelta(days=1), 1)]
    assert factories.count(QueuedTask) == 4


@pytest.mark.postgres_only
def test_two_replicas_running_the_same_tick_create_one_job_per_project(
    postgres_url: str,
) -> None:
    db = DatabaseService(postgres_url)
    engines = [DatabaseService(postgres_url) for _ in range(2)]
    try:
        factories = Factories(db)
        projects = factories.projects(2000, new_memories=1)
        settings = AppSettings(database_url=postgres_url)
        replicas = [ConsolidationTriggerService(engine, settings=settings) for engine in engines]
        tick = T0 + timedelta(hours=2)
        barrier = threading.Barrier(2)

        def run(service: ConsolidationTriggerService) -> TickResult:
            barrier.wait()
            return service.run_scheduled_tick_sync(tick)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(run, replicas))

        # The tick's record decides: one run writes every job, the other finds it done.
        assert sorted(_outcome(result) for result in results) == [
            (0, 0, True),
            (2000, 0, False),
        ]
        jobs = stored_jobs(db)
        assert len(jobs) == 2000
        assert {job.project_id for job in jobs} == set(projects)
        assert factories.count(QueuedTask) == 2000
        assert stored_ticks(db) == [(tick, 2000)]
    finally:
        for engine in [*engines, db]:
            engine.dispose()


# --- catching up: run_due ---------------------------------------------------------------


def test_a_missed_tick_inside_the_grace_runs_once_at_start(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    factories.projects(4, new_memories=1)
    # Daily at 02:00 UTC; it is 02:40, and nothing ran at 02:00.
    clock.set(T0.replace(hour=2, minute=40))
    triggers = make_triggers(consolidation_schedule="0 2 * * *", consolidation_misfire_grace=3600)
    tick = T0.replace(hour=2, minute=0)

    triggers.start()
    try:
        wait_for(lambda: stored_ticks(db) != [], what="the start-up catch-up to commit its tick")
    finally:
        triggers.stop()

    assert stored_ticks(db) == [(tick, 4)]
    assert {job.scheduled_for for job in stored_jobs(db)} == {tick}
    assert len(stored_jobs(db)) == 4
    ran = one(caplog, "tick_ran")
    assert (ran.tick, ran.jobs_created) == (tick.isoformat(), 4)
    assert triggers.ticks.run_due() is CatchUp.NOT_NEEDED  # it is recorded now
    assert len(stored_jobs(db)) == 4
    assert factories.count(QueuedTask) == 4


def test_a_missed_tick_older_than_the_grace_is_skipped_and_logged_once(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    factories.projects(2, new_memories=1)
    clock.set(T0.replace(hour=4, minute=0, second=1))
    triggers = make_triggers(consolidation_schedule="0 2 * * *", consolidation_misfire_grace=7200)

    with caplog.at_level(logging.INFO):
        assert triggers.ticks.run_due() is CatchUp.TOO_OLD
        clock.advance(timedelta(seconds=30))  # the next periodic pass: same tick, no new line
        assert triggers.ticks.run_due() is CatchUp.TOO_OLD

    assert stored_jobs(db) == []
    assert stored_ticks(db) == []
    assert one(caplog, "tick_too_old").tick == "2026-01-05T02:00:00+00:00"
    assert records(caplog, "tick_ran") == []


def test_a_missed_tick_exactly_at_the_grace_still_runs(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    factories.projects(2, new_memories=1)
    clock.set(T0.replace(hour=4, minute=0, second=0))
    triggers = make_triggers(consolidation_schedule="0 2 * * *", consolidation_misfire_grace=7200)

    assert triggers.ticks.run_due() is CatchUp.RUN

    assert stored_ticks(db) == [(T0.replace(hour=2), 2)]


def test_three_missed_ticks_produce_one_run(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    factories.projects(3, new_memories=1)
    # Every 10 minutes; 12:00, 12:10 and 12:20 passed while nothing ran.
    clock.set(T0.replace(minute=25))
    triggers = make_triggers(
        consolidation_schedule="*/10 * * * *", consolidation_misfire_grace=3600
    )

    with caplog.at_level(logging.INFO):
        assert triggers.ticks.run_due() is CatchUp.RUN
        assert triggers.ticks.run_due() is CatchUp.NOT_NEEDED

    assert {job.scheduled_for for job in stored_jobs(db)} == {T0.replace(minute=20)}
    assert len(stored_jobs(db)) == 3
    assert stored_ticks(db) == [(T0.replace(minute=20), 3)]
    assert [r.tick for r in records(caplog, "tick_ran")] == ["2026-01-05T12:20:00+00:00"]


def test_a_tick_that_found_every_project_busy_is_not_run_again(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    busy = factories.job(project.id, status=JobStatus.RUNNING)
    triggers = make_triggers(consolidation_schedule="0 2 * * *")
    tick = T0.replace(hour=2, minute=0)
    assert _outcome(triggers.run_scheduled_tick_sync(tick)) == (0, 1, False)
    finish_job(db, busy.id, tick + timedelta(minutes=10))

    clock.set(tick + timedelta(minutes=40))  # a restart inside the grace
    assert triggers.ticks.run_due() is CatchUp.NOT_NEEDED

    assert [(job.id, job.trigger_type) for job in stored_jobs(db)] == [
        (busy.id, TriggerType.MANUAL)
    ]
    assert stored_ticks(db) == [(tick, 0)]
    assert factories.count(QueuedTask) == 0


def test_a_tick_whose_run_failed_is_retried_by_the_next_run_due(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    factories.projects(3, new_memories=1)
    clock.set(T0.replace(hour=2, minute=0))
    triggers = make_triggers(consolidation_schedule="0 2 * * *")
    tick = T0.replace(hour=2, minute=0)
    real_insert = job_store.insert_jobs_counting
    calls: list[str] = []

    def insert_failing_once(*args: Any, **kwargs: Any) -> int:
        calls.append("insert_jobs_counting")
        if len(calls) == 1:
            raise RuntimeError("connection reset")
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(job_store, "insert_jobs_counting", insert_failing_once)
    with pytest.raises(RuntimeError, match="connection reset"):
        triggers.ticks.run_due()
    # The whole tick rolled back, its record too: it is still due.
    assert stored_jobs(db) == []
    assert stored_ticks(db) == []
    assert factories.count(QueuedTask) == 0
    assert records(caplog, "tick_ran") == []

    clock.advance(timedelta(seconds=30))  # the next periodic pass
    assert triggers.ticks.run_due() is CatchUp.RUN

    assert len(stored_jobs(db)) == 3
    assert factories.count(QueuedTask) == 3
    assert stored_ticks(db) == [(tick, 3)]
    ran = one(caplog, "tick_ran")
    assert (ran.tick, ran.jobs_created) == (tick.isoformat(), 3)
    assert triggers.ticks.run_due() is CatchUp.NOT_NEEDED
    assert len(stored_jobs(db)) == 3
    assert calls == ["insert_jobs_counting", "insert_jobs_counting"]


# --- pauses, and whether a tick ran on time ---------------------------------------------


def _ticks(db: DatabaseService) -> list[tuple[Any, ...]]:
    """Every recorded tick, oldest first, as its history shows it."""
    with db.read() as session:
        rows = reversed(tick_store.list_ticks(session, limit=100, offset=0))
        return [
            (
                t.scheduled_for,
                t.jobs_created,
                t.skipped_active,
                t.skipped_idle,
                t.skipped_paused,
                t.schedule_paused,
                t.caught_up,
            )
            for t in rows
        ]


def test_while_the_schedule_is_paused_replicas_record_the_tick_once_and_create_nothing(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    factories.projects(3, new_memories=1)
    schedule = ScheduleService(db, clock=clock)
    schedule.pause_sync(by="alice", reason="database upgrade")
    replicas = [make_triggers(consolidation_schedule="0 12 * * *") for _ in range(3)]
    tick, next_tick = T0, T0 + timedelta(days=1)  # T0 is 12:00

    results = [replica.run_scheduled_tick_sync(tick) for replica in replicas]

    assert [(r.created, r.schedule_paused, r.already_recorded) for r in results] == [
        (0, True, False),
        (0, False, True),
        (0, False, True),
    ]
    assert stored_jobs(db) == []
    assert factories.count(QueuedTask) == 0
    assert _ticks(db) == [(tick, 0, 0, 0, 0, True, False)]
    # Resumed: the passed-over tick is not caught up, the next one runs.
    schedule.resume_sync()
    clock.set(tick + timedelta(minutes=10))
    assert replicas[0].ticks.run_due() is CatchUp.NOT_NEEDED
    resumed = replicas[1].run_scheduled_tick_sync(next_tick)
    assert (resumed.created, resumed.schedule_paused) == (3, False)
    assert {job.scheduled_for for job in stored_jobs(db)} == {next_tick}
    assert factories.count(QueuedTask) == 3
    assert _ticks(db)[1] == (next_tick, 3, 0, 0, 0, False, False)


def test_a_paused_project_gets_no_scheduled_job_and_is_counted(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    working, paused_with_work, paused_busy = factories.projects(3, new_memories=1)
    factories.projects(2)  # idle
    projects = ProjectService(
        db, settings=AppSettings(database_url=db.url), queue=TaskQueueService()
    )
    for paused in (paused_with_work, paused_busy):
        projects.pause_sync(paused, by="alice")
    manual = factories.job(paused_busy)  # a manual job still runs while paused
    triggers = make_triggers()

    result = triggers.run_scheduled_tick_sync(T0)

    assert (result.created, result.skipped_active, result.skipped_idle, result.skipped_paused) == (
        1,
        0,
        2,
        2,
    )
    assert [(job.project_id, job.trigger_type) for job in stored_jobs(db)] == [
        (paused_busy, TriggerType.MANUAL),
        (working, TriggerType.SCHEDULED),
    ]
    assert [job.id for job in stored_jobs(db, paused_busy)] == [manual.id]
    assert factories.count(QueuedTask) == 1
    assert _ticks(db) == [(T0, 1, 0, 2, 2, False, False)]
    assert trigger_count(triggers, "scheduled", "skipped_paused") == 2


def test_a_tick_run_by_the_catch_up_says_so_and_one_on_its_timer_does_not(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    factories.projects(1, new_memories=1)
    triggers = make_triggers(consolidation_schedule="0 * * * *")
    clock.set(T0.replace(minute=20))  # the 12:00 tick was missed

    assert triggers.ticks.run_due() is CatchUp.RUN  # the start-up / periodic catch-up
    clock.set(T0.replace(hour=13))
    assert triggers.ticks.run_on_timer() is CatchUp.RUN

    assert [(tick[0], tick[-1]) for tick in _ticks(db)] == [
        (T0, True),
        (T0.replace(hour=13), False),
    ]
