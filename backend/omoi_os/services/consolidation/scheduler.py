"""The consolidation scheduler: APScheduler wiring and its bounded stop.

Two timers run on APScheduler's own threads (never on an event loop, so start() works
from synchronous code and inside a running loop alike):

- the schedule's ticks, each calling `on_tick` at its instant;
- a periodic pass, first right after start() and then every `interval`, calling each
  of `periodic` in turn (the tick catch-up, the sweeper, retention …); one step's
  failure is logged and does not keep the others from running.

APScheduler only keeps time. Whether a tick runs (missed, too old, already run by a
replica) is decided by the callbacks, so a late or doubled timer changes nothing.

APScheduler's own lines about our scheduler go to an omoi_os logger, not to the
`apscheduler.*` loggers a host's own APScheduler writes to: its INFO chatter (each run,
each job added, each start) is our DEBUG, its warnings and errors stay what they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import OperationalError

from omoi_os.clock import Clock, utc_now
from omoi_os.schedule import CronSchedule
from omoi_os.services.consolidation.decisions import next_timer_tick
from omoi_os.services.threads import InFlight

logger = logging.getLogger(__name__)

TICK_JOB_ID = "consolidation-tick"
PERIODIC_JOB_ID = "consolidation-periodic"
DEFAULT_INTERVAL = timedelta(seconds=30)
DEFAULT_STOP_TIMEOUT = 10.0
INTERRUPT_GRACE_S = 5.0

# Where APScheduler logs about our scheduler (see _InfoAsDebug).
apscheduler_logger = logging.getLogger(f"{__name__}.apscheduler")


class _InfoAsDebug(logging.Filter):
    """APScheduler's INFO lines are our DEBUG: demoted, and dropped unless the logger is
    enabled for DEBUG (a handler at NOTSET under a root at INFO would print them).
    Warnings (a run skipped or missed) and errors (an exception in a job) pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return apscheduler_logger.isEnabledFor(logging.DEBUG)


_INFO_AS_DEBUG = _InfoAsDebug()


class _OwnLoggerExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """APScheduler's thread pool, logging to our logger: APScheduler 3 names an
    executor's logger `apscheduler.executors.<alias>` when the scheduler starts it, and
    each run's lines go to the logger of that name."""

    def start(self, scheduler: BaseScheduler, alias: str) -> None:
        super().start(scheduler, alias)
        self._logger = apscheduler_logger


class CronScheduleTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger that fires on a CronSchedule's ticks by `clock` (the
    database's, which every replica shares). APScheduler waits on this machine's clock,
    so each tick's instant is translated into it when the timer is set; a timer that
    fires early by the shared clock (the two moved apart meanwhile) is set again for
    the same tick, and one that fires late runs the tick it was set for."""

    def __init__(self, schedule: CronSchedule, clock: Clock = utc_now) -> None:
        self.schedule = schedule
        self._clock = clock

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Stateless on purpose: APScheduler asks twice after each run.
        shared_now = self._clock()
        tick = next_timer_tick(self.schedule, shared_now)
        return None if tick is None else tick - (shared_now - now)

    def __str__(self) -> str:
        return f"crontab[{self.schedule}]"


class ConsolidationScheduler:
    """Runs `on_tick` on the schedule and `periodic` every `interval`, until stopped."""

    def __init__(
        self,
        schedule: CronSchedule,
        *,
        on_tick: Callable[[], Any],
        periodic: Sequence[Callable[[], Any]],
        in_flight: InFlight,
        interval: timedelta = DEFAULT_INTERVAL,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        clock: Clock = utc_now,
    ) -> None:
        self.schedule = schedule
        self._clock = clock
        self._on_tick = on_tick
        self._periodic = tuple(periodic)
        self._in_flight = in_flight
        self._interval = interval
        self._stop_timeout = stop_timeout
        self._scheduler: BackgroundScheduler | None = None

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    def start(self) -> None:
        """Start both timers (idempotent)."""
        if self._scheduler is not None:
            return
        self._in_flight.open()
        apscheduler_logger.addFilter(_INFO_AS_DEBUG)  # once: the same filter is added once
        scheduler = BackgroundScheduler(
            timezone=UTC,
            logger=apscheduler_logger,
            executors={"default": _OwnLoggerExecutor()},
        )
        scheduler.add_job(
            self._guarded(self._on_tick, "tick"),
            CronScheduleTrigger(self.schedule, self._clock),
            id=TICK_JOB_ID,
            name="consolidation: scheduled tick",
            coalesce=True,  # several missed run times → one call
            max_instances=1,
            misfire_grace_time=None,  # a late call still comes; the callback decides
        )
        scheduler.add_job(
            self._run_periodic,
            IntervalTrigger(seconds=self._interval.total_seconds(), timezone=UTC),
            id=PERIODIC_JOB_ID,
            name="consolidation: periodic pass",
            next_run_time=datetime.now(UTC),  # the first pass is the start-up catch-up
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        scheduler.start()
        self._scheduler = scheduler
        logger.info(
            "consolidation scheduler started: schedule %s, next tick %s",
            self.schedule,
            self.schedule.next_tick(self._clock()),
            extra={"action": "scheduler_started", "schedule": str(self.schedule)},
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop both timers (idempotent, also if never started). A callback already
        running gets `timeout` seconds to finish, then its statement is cancelled: its
        transaction rolls back whole, so stopping never leaves half a tick behind."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        self._in_flight.close()
        scheduler.shutdown(wait=False)
        bound = self._stop_timeout if timeout is None else timeout
        if not self._in_flight.wait_idle(bound):
            self._interrupt_stragglers(bound)
        logger.info("consolidation scheduler stopped", extra={"action": "scheduler_stopped"})

    def _interrupt_stragglers(self, waited: float) -> None:
        interrupted = self._in_flight.interrupt_all()
        if interrupted and self._in_flight.wait_idle(INTERRUPT_GRACE_S):
            logger.warning(
                "consolidation scheduler stopped after %.1f s by cancelling %d statement(s); "
                "they rolled back",
                waited,
                interrupted,
                extra={"action": "scheduler_stop_cancelled", "cancelled": interrupted},
            )
            return
        logger.warning(
            "consolidation scheduler stopped with %d callback(s) still running after %.1f s "
            "(%d statement(s) cancelled); their transactions commit or roll back on their own",
            self._in_flight.running,
            waited,
            interrupted,
            extra={
                "action": "scheduler_stop_overran",
                "still_running": self._in_flight.running,
                "cancelled": interrupted,
            },
        )

    def _run_periodic(self) -> None:
        for step in self._periodic:
            self._guarded(step, "periodic")()

    def _guarded(self, callback: Callable[[], Any], kind: str) -> Callable[[], None]:
        """Wrap a callback: not after stop() began, counted while it runs, and its
        failure logged (naming it) instead of lost in APScheduler's thread."""
        name = getattr(callback, "__name__", repr(callback))

        def run() -> None:
            with self._in_flight.enter() as admitted:
                if not admitted:
                    return
                try:
                    callback()
                except OperationalError as exc:  # the database is down: one line, no trace
                    logger.warning(
                        "consolidation %s: database unavailable: %s",
                        name,
                        exc.orig,
                        extra={"action": "callback_database_unavailable", "callback": name},
                    )
                except Exception:
                    logger.exception(
                        "consolidation %s failed",
                        name,
                        extra={"action": "callback_failed", "callback": name, "kind": kind},
                    )

        run.__name__ = name
        return run
