"""ConsolidationScheduler (scheduler.py): the tick timer and the periodic pass on
APScheduler's threads, a callback's failure logged without stopping the schedule, and
a bounded stop that cancels a callback's statement (which then rolls back whole)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from omoi_os import testing
from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import ConsolidationJob, QueuedTask
from omoi_os.schedule import CronSchedule
from omoi_os.services.consolidation import scheduler as scheduler_module
from omoi_os.services.consolidation.scheduler import ConsolidationScheduler, apscheduler_logger
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.triggers.job_writer import JobWriter
from omoi_os.services.consolidation.triggers.tick import TickTrigger
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.services.threads import InFlight
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.logs import one, records
from tests.support.polling import wait_for
from tests.support.rows import stored_ticks
from tests.support.schedules import SoonSchedule

SCHEDULE = CronSchedule.parse("0 2 * * *")
WAIT = 20.0  # generous: the machine running the tests may be busy


def _nothing() -> None:
    return None


def _scheduler(
    *,
    on_tick: Callable[[], Any] = _nothing,
    periodic: list[Callable[[], Any]] | None = None,
    in_flight: InFlight | None = None,
    schedule: Any = SCHEDULE,
    **options: Any,
) -> ConsolidationScheduler:
    return ConsolidationScheduler(
        schedule,
        on_tick=on_tick,
        periodic=periodic or [],
        in_flight=in_flight or InFlight(),
        **options,
    )


def _job_count(db: DatabaseService) -> int:
    with db.read() as session:
        return len(list(session.scalars(select(ConsolidationJob.id))))


# --- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_timeout", "timeout"),
    [(30.0, 0.3), (0.3, None)],
    ids=["stop-timeout-argument", "constructor-default"],
)
def test_stop_is_bounded_while_a_callback_is_still_running(
    stop_timeout: float, timeout: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_step() -> None:
        entered.set()
        release.wait(WAIT)
        finished.set()

    scheduler = _scheduler(periodic=[slow_step], stop_timeout=stop_timeout)
    scheduler.start()
    try:
        assert entered.wait(WAIT)
        began = time.monotonic()
        scheduler.stop(timeout)
        waited = time.monotonic() - began
    finally:
        release.set()

    assert finished.wait(WAIT)  # the callback itself was never killed
    assert 0.3 <= waited < 5
    assert not scheduler.running
    overran = one(caplog, "scheduler_stop_overran")
    assert (overran.still_running, overran.cancelled) == (1, 0)
    assert records(caplog, "scheduler_stop_cancelled") == []
    assert len(records(caplog, "scheduler_stopped")) == 1


def test_stop_waits_for_a_callback_that_finishes_in_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def step() -> None:
        entered.set()
        release.wait(WAIT)
        finished.set()

    scheduler = _scheduler(periodic=[step], stop_timeout=WAIT)
    scheduler.start()
    assert entered.wait(WAIT)
    # The callback finishes while stop() waits for it.
    threading.Timer(0.2, release.set).start()
    scheduler.stop()

    assert finished.is_set()  # stop() returned only once the callback had ended
    assert records(caplog, "scheduler_stop_overran") == []
    assert records(caplog, "scheduler_stop_cancelled") == []
    assert len(records(caplog, "scheduler_stopped")) == 1


@pytest.mark.postgres_only
@pytest.mark.parametrize("blocker", ["tick-record", "active-job"])
def test_stop_cancels_a_tick_stuck_on_a_lock_and_it_rolls_back(
    postgres_url: str, blocker: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    db = DatabaseService(postgres_url)
    monitor = psycopg.connect(testing.libpq_url(postgres_url), autocommit=True)
    holder = psycopg.connect(testing.libpq_url(postgres_url))
    try:
        projects = Factories(db).projects(5, new_memories=1)
        settings = AppSettings(database_url=postgres_url)
        in_flight = InFlight()
        ticks = TickTrigger(
            db,
            JobWriter(TaskQueueService(clock=clock), clock=clock),
            settings=settings,
            clock=clock,
            metrics=ConsolidationMetrics(),
            in_flight=in_flight,
        )
        tick = T0.replace(hour=2)

        def stuck_tick() -> None:
            ticks.run_tick(tick)

        if blocker == "tick-record":
            # Another run holds this tick's record, uncommitted: ours waits for its outcome.
            holder.execute(
                "INSERT INTO consolidation_ticks (scheduled_for, fired_at, jobs_created) "
                "VALUES (%s, now(), 0)",
                (tick,),
            )
            waiting_insert = "INSERT INTO consolidation_ticks%"
        else:
            # Another writer's uncommitted job for one project: our tick has recorded
            # itself and waits, inside its job INSERT, for that project's row.
            holder.execute(
                "INSERT INTO consolidation_jobs "
                "(project_id, trigger_type, scope, status, triggered_by, created_at) "
                "VALUES (%s, 'manual', '{}', 'pending', 'holder', now())",
                (max(projects),),
            )
            waiting_insert = "INSERT INTO consolidation_jobs%"

        def tick_waits_on_the_lock() -> bool:
            row = monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                (waiting_insert,),
            ).fetchone()
            return row is not None and row[0] == 1

        # The tick timer fires once, a moment after start.
        scheduler = ConsolidationScheduler(
            SoonSchedule(), on_tick=stuck_tick, periodic=[], in_flight=in_flight, stop_timeout=0.5
        )
        scheduler.start()
        wait_for(tick_waits_on_the_lock, timeout=WAIT, what="the tick to wait on the lock")

        began = time.monotonic()
        scheduler.stop()
        stopped_in = time.monotonic() - began
        holder.rollback()

        assert stopped_in < 5  # 0.5 s, then the cancel (not the 5 s interrupt grace)
        assert one(caplog, "scheduler_stop_cancelled").cancelled == 1
        assert records(caplog, "scheduler_stop_overran") == []
        assert one(caplog, "callback_database_unavailable").callback == "stuck_tick"
        assert records(caplog, "tick_ran") == []
        # Rolled back whole: no record of the tick, no job, no task.
        assert stored_ticks(db) == []
        assert _job_count(db) == 0
        assert Factories(db).count(QueuedTask) == 0
        # So the tick is still there to run.
        assert ticks.run_tick(tick).created == 5
        assert stored_ticks(db) == [(tick, 5)]
    finally:
        holder.close()
        monitor.close()
        db.dispose()


# --- failing callbacks ----------------------------------------------------------------


def test_a_failing_tick_callback_is_logged_and_the_schedule_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    calls: list[float] = []

    def broken_tick() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("database exploded")

    # A tick every 50 ms, from a moment after start, for as long as the test runs.
    scheduler = _scheduler(on_tick=broken_tick, schedule=SoonSchedule(count=None))
    scheduler.start()
    try:
        wait_for(lambda: len(records(caplog, "callback_failed")) >= 1, timeout=WAIT)
        assert scheduler.running
        # The timer fires again after the failure: the schedule kept going.
        wait_for(lambda: len(calls) >= 2, timeout=WAIT, what="the tick to fire again")
    finally:
        scheduler.stop()

    failed = records(caplog, "callback_failed")
    assert len(calls) >= 2
    assert [(r.callback, r.kind) for r in failed] == [("broken_tick", "tick")] * len(calls)
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in failed)
    assert str(failed[0].exc_info[1]) == "database exploded"


def test_a_callback_that_finds_the_database_down_logs_one_line_without_a_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    done = threading.Event()

    def unreachable() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    scheduler = _scheduler(periodic=[unreachable, done.set])
    scheduler.start()
    try:
        assert done.wait(WAIT)
    finally:
        scheduler.stop()

    down = one(caplog, "callback_database_unavailable")
    assert (down.callback, down.exc_info) == ("unreachable", None)
    assert records(caplog, "callback_failed") == []


# --- the periodic pass ------------------------------------------------------------------


def test_the_periodic_pass_runs_right_after_start_and_runs_every_step_even_if_one_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    calls: list[str] = []
    done = threading.Event()

    def failing_step() -> None:
        calls.append("failing_step")
        raise RuntimeError("step broke")

    def next_step() -> None:
        calls.append("next_step")
        done.set()

    # An hour between passes: only the pass right after start can run in this test.
    scheduler = _scheduler(periodic=[failing_step, next_step], interval=timedelta(hours=1))
    scheduler.start()
    try:
        assert done.wait(WAIT)
    finally:
        scheduler.stop()

    assert calls == ["failing_step", "next_step"]
    failed = one(caplog, "callback_failed")
    assert (failed.callback, failed.kind) == ("failing_step", "periodic")
    assert failed.exc_info is not None and failed.exc_info[0] is RuntimeError


def test_the_services_periodic_pass_catches_up_the_tick_before_its_other_steps(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    factories.projects(2, new_memories=1)
    clock.set(T0.replace(hour=2, minute=40))  # the 02:00 tick was missed
    seen: list[list[tuple[datetime, int]]] = []
    done = threading.Event()

    def sweep() -> None:
        seen.append(stored_ticks(db))
        done.set()

    settings = AppSettings(database_url=db.url, consolidation_schedule="0 2 * * *")
    triggers = ConsolidationTriggerService(
        db,
        settings=settings,
        clock=clock,
        periodic=[sweep],
        periodic_interval=timedelta(hours=1),
        stop_timeout=5,
    )
    triggers.start()
    try:
        assert done.wait(WAIT)
    finally:
        triggers.stop()

    assert seen == [[(T0.replace(hour=2), 2)]]
    assert _job_count(db) == 2


# --- what it logs ------------------------------------------------------------------------


def _from_apscheduler(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records of the loggers a host's own APScheduler writes to."""
    return [r for r in caplog.records if r.name.split(".")[0] == "apscheduler"]


def test_the_services_start_pass_and_stop_log_only_our_two_lines_at_info(
    db: DatabaseService, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    passed = threading.Event()
    settings = AppSettings(database_url=db.url)
    triggers = ConsolidationTriggerService(
        db,
        settings=settings,
        clock=clock,
        periodic=[passed.set],
        periodic_interval=timedelta(hours=1),
        stop_timeout=5,
    )

    triggers.start()
    try:
        assert passed.wait(WAIT)
    finally:
        triggers.stop()

    assert _from_apscheduler(caplog) == []
    ours = [r for r in caplog.records if r.name.startswith(scheduler_module.__name__)]
    assert [(r.name, r.levelno, r.action) for r in ours] == [
        (scheduler_module.__name__, logging.INFO, "scheduler_started"),
        (scheduler_module.__name__, logging.INFO, "scheduler_stopped"),
    ]


def test_apschedulers_lines_about_our_scheduler_are_debug_under_our_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=apscheduler_logger.name)  # a host asking for them
    scheduler = _scheduler(interval=timedelta(hours=1))

    scheduler.start()
    try:
        wait_for(
            lambda: any("executed successfully" in r.getMessage() for r in caplog.records),
            timeout=WAIT,
            what="the periodic pass to end",
        )
    finally:
        scheduler.stop()

    assert _from_apscheduler(caplog) == []
    theirs = [r for r in caplog.records if r.name == apscheduler_logger.name]
    assert {(r.levelno, r.levelname) for r in theirs} == {(logging.DEBUG, "DEBUG")}
    # APScheduler's INFO lines, in the order it wrote them (its DEBUG lines between them).
    messages = iter(r.getMessage() for r in theirs)
    for start in (
        'Added job "consolidation: scheduled tick"',
        'Added job "consolidation: periodic pass"',
        "Scheduler started",
        'Running job "consolidation: periodic pass',
        'Job "consolidation: periodic pass',
        "Scheduler has been shut down",
    ):
        assert any(message.startswith(start) for message in messages), start


def test_a_run_skipped_while_the_last_still_runs_is_a_warning_under_our_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    entered, release = threading.Event(), threading.Event()

    def long_tick() -> None:
        entered.set()
        release.wait(WAIT)

    # A tick every 50 ms: the next falls due while the first still runs (max_instances=1).
    scheduler = _scheduler(on_tick=long_tick, schedule=SoonSchedule(count=None))
    scheduler.start()
    try:
        assert entered.wait(WAIT)
        wait_for(
            lambda: any(r.levelno == logging.WARNING for r in caplog.records),
            timeout=WAIT,
            what="a skipped run's warning",
        )
    finally:
        release.set()
        scheduler.stop()

    assert _from_apscheduler(caplog) == []
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.name == apscheduler_logger.name
    message = warning.getMessage()
    assert message.startswith('Execution of job "consolidation: scheduled tick'), message
    assert message.endswith('" skipped: maximum number of running instances reached (1)')


class _Escapes(BaseException):
    """Not an Exception: our guard lets it through, to APScheduler's own handler."""


def test_a_failure_in_a_scheduled_callback_is_logged_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    def broken_step() -> None:
        raise RuntimeError("step broke")

    def escaping_step() -> None:
        raise _Escapes("out of our hands")

    scheduler = _scheduler(periodic=[broken_step, escaping_step], interval=timedelta(hours=1))
    scheduler.start()
    try:
        wait_for(
            lambda: any(r.name == apscheduler_logger.name for r in caplog.records),
            timeout=WAIT,
            what="APScheduler's error line",
        )
    finally:
        scheduler.stop()

    failed = one(caplog, "callback_failed")
    assert (failed.name, failed.levelno, failed.getMessage()) == (
        scheduler_module.__name__,
        logging.ERROR,
        "consolidation broken_step failed",
    )
    (escaped,) = [r for r in caplog.records if r.name == apscheduler_logger.name]
    assert escaped.levelno == logging.ERROR
    assert escaped.getMessage().endswith('" raised an exception')
    assert escaped.exc_info is not None and escaped.exc_info[0] is _Escapes
    assert _from_apscheduler(caplog) == []
