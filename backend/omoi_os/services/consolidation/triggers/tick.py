"""The scheduled trigger: one run of a cron tick writes a job for every active project,
not paused, that has something to do, set-based, in one transaction, together with the
tick's record (which also counts the projects passed over: busy, idle or paused).
While the schedule is paused, a tick's run records it as passed over and writes no job.

The record is keyed by the tick's instant, so a tick runs once however many replicas
fire it, and each job carries the instant too, unique per project (invariant 2,
docs/invariants.md). `run_due` is the
one catch-up policy, whoever calls it (the tick's own timer, start-up, the periodic
check): run the latest tick if no run of it committed and it is recent enough. The
record says whether the tick ran late, by the catch-up (`caught_up`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from omoi_os.clock import Clock
from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import TriggerType
from omoi_os.schedule import spread_offset
from omoi_os.services.consolidation.decisions import (
    CatchUp,
    TriggerOutcome,
    decide_catch_up,
    due_tick,
)
from omoi_os.services.consolidation.scope import DEFAULT_SCOPE
from omoi_os.services.consolidation.triggers.job_writer import JobWriter
from omoi_os.services.database import DatabaseService, raw_connection
from omoi_os.services.threads import InFlight
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store
from omoi_os.store import projects as project_store
from omoi_os.store import ticks as tick_store

logger = logging.getLogger(__name__)

SCHEDULER_PRINCIPAL = "scheduler"
# PostgreSQL SQLSTATEs worth one more try: deadlock, serialization failure. Both mean
# the transaction was rolled back whole.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}
_TICK_ATTEMPTS = 3

T = TypeVar("T")


@dataclass(frozen=True)
class TickResult:
    """What one run of a scheduled tick did."""

    tick: datetime
    created: int  # jobs this run created (and queued)
    skipped_active: int  # active projects passed over because a job was active
    skipped_idle: int  # active projects passed over with nothing to do
    already_recorded: bool  # another run (here or on a replica) had done this tick
    seconds: float
    skipped_paused: int = 0  # active projects passed over because they are paused
    schedule_paused: bool = False  # recorded and passed over whole: the schedule is paused


class TickTrigger:
    """Runs the schedule's ticks."""

    def __init__(
        self,
        db: DatabaseService,
        writer: JobWriter,
        *,
        settings: AppSettings,
        clock: Clock,
        metrics: ConsolidationMetrics,
        in_flight: InFlight,
    ) -> None:
        self._db = db
        self._writer = writer
        self._settings = settings
        self.schedule = settings.schedule
        self._clock = clock
        self._metrics = metrics
        self._in_flight = in_flight  # lets a stopping scheduler cancel a stuck fan-out
        self._reported_too_old: datetime | None = None

    def run_on_timer(self) -> CatchUp:
        """run_due, called by the tick's own timer: a tick it runs is on time."""
        return self.run_due(caught_up=False)

    def run_due(self, *, caught_up: bool = True) -> CatchUp:
        """Run the latest tick at or before now if no run of it committed and it is no
        older than the misfire grace; a tick missed for longer is skipped and logged
        (once). Several missed ticks coalesce into the latest. Called by the catch-up
        (start-up, the periodic pass) unless `caught_up` is False: the tick's record
        says which."""
        now = self._clock()
        latest = due_tick(self.schedule, now)
        with self._db.read() as session:
            recorded = latest is not None and tick_store.tick_recorded(session, latest)
        grace = timedelta(seconds=self._settings.consolidation_misfire_grace)
        decision = decide_catch_up(latest, recorded, now, grace)
        if decision is CatchUp.RUN and latest is not None:
            self.run_tick(latest, caught_up=caught_up)
        elif decision is CatchUp.TOO_OLD and latest != self._reported_too_old:
            self._reported_too_old = latest
            logger.info(
                "missed tick %s is older than consolidation_misfire_grace (%s); skipped",
                latest.isoformat() if latest else None,
                grace,
                extra={"action": "tick_too_old", "tick": latest.isoformat() if latest else None},
            )
        return decision

    def run_tick(self, tick: datetime, *, caught_up: bool = False) -> TickResult:
        """Write a job and its queue task for `tick` for every active project, not
        paused, without an active job, in one transaction. Running a tick again, here or
        on another replica, creates nothing more. While the schedule is paused the tick
        is recorded as passed over, with no job: it is never caught up later."""
        tick = tick.astimezone(UTC)
        started = time.perf_counter()
        result = _retrying(lambda: self._fan_out(tick, started, caught_up))
        self._metrics.tick_fanout_seconds.observe(result.seconds)
        self._metrics.count_trigger(TriggerType.SCHEDULED, TriggerOutcome.CREATED, result.created)
        self._metrics.count_trigger(
            TriggerType.SCHEDULED, TriggerOutcome.SKIPPED_ACTIVE, result.skipped_active
        )
        self._metrics.count_trigger(
            TriggerType.SCHEDULED, TriggerOutcome.SKIPPED_IDLE, result.skipped_idle
        )
        self._metrics.count_trigger(
            TriggerType.SCHEDULED, TriggerOutcome.SKIPPED_PAUSED, result.skipped_paused
        )
        if result.already_recorded:
            self._metrics.count_trigger(TriggerType.SCHEDULED, TriggerOutcome.SKIPPED_RECORDED)
        self._log(result)
        return result

    def _fan_out(self, tick: datetime, started: float, caught_up: bool) -> TickResult:
        now = self._clock()
        with (
            self._db.transaction() as session,
            self._in_flight.interruptible(raw_connection(session)),
        ):
            claim = tick_store.record_tick(session, tick, now=now, caught_up=caught_up)
            if claim is not tick_store.TickClaim.RUN:
                return TickResult(
                    tick,
                    0,
                    0,
                    0,
                    already_recorded=claim is tick_store.TickClaim.ALREADY_RECORDED,
                    seconds=time.perf_counter() - started,
                    schedule_paused=claim is tick_store.TickClaim.SCHEDULE_PAUSED,
                )
            created = self._write_jobs(session, tick)
            result = self._count_passed_over(session, tick, created)
            tick_store.set_tick_outcome(
                session,
                tick,
                created=created,
                skipped_active=result.skipped_active,
                skipped_idle=result.skipped_idle,
                skipped_paused=result.skipped_paused,
            )
        return replace(result, seconds=time.perf_counter() - started)

    @staticmethod
    def _count_passed_over(session: Session, tick: datetime, created: int) -> TickResult:
        """The active projects the tick passed over, by why: paused, a job still active,
        nothing to do. Counted set-based, after the jobs were written."""
        schedulable, paused = project_store.count_active_projects(session)
        with_active_job = job_store.count_projects_with_active_job(session)
        return TickResult(
            tick,
            created,
            skipped_active=max(with_active_job - created, 0),
            skipped_idle=max(schedulable - with_active_job, 0),
            already_recorded=False,
            seconds=0.0,
            skipped_paused=paused,
        )

    def _write_jobs(self, session: Session, tick: datetime) -> int:
        """The tick's jobs and tasks; how many. A spread gives each job its own
        claimable_at, computed per project; otherwise it stays set-based in SQL."""
        spread = timedelta(seconds=self._settings.consolidation_spread)
        if not spread:
            return self._writer.write_tick(
                session,
                self._candidates(tick),
                scope=DEFAULT_SCOPE,
                triggered_by=SCHEDULER_PRINCIPAL,
                tick=tick,
            )
        created = self._writer.write(
            session,
            self._candidates(tick),
            trigger_type=TriggerType.SCHEDULED,
            scope=DEFAULT_SCOPE,
            triggered_by=SCHEDULER_PRINCIPAL,
            scheduled_for=tick,
            claimable_at_of=lambda job: tick + spread_offset(job.project_id, spread),
        )
        return len(created)

    @staticmethod
    def _candidates(tick: datetime) -> Select[Any]:
        """Active projects, not paused, without an active job, that the scheduled job
        has something to do for (new memories, or tiers that expired with age): an idle
        project gets no job and no queue row. Driven by the work, so its cost follows the work."""
        candidates = project_store.schedulable_project_ids()
        project_id = candidates.selected_columns[0]
        return candidates.where(
            project_id.in_(memory_store.projects_with_work(tick)),
            ~job_store.has_active_job(project_id),
        )

    @staticmethod
    def _log(result: TickResult) -> None:
        fields = {
            "action": "tick_ran",
            "tick": result.tick.isoformat(),
            "jobs_created": result.created,
            "skipped_active": result.skipped_active,
            "skipped_idle": result.skipped_idle,
            "skipped_paused": result.skipped_paused,
            "already_recorded": result.already_recorded,
            "schedule_paused": result.schedule_paused,
        }
        if result.already_recorded:
            logger.info(
                "scheduled tick %s: already run (here or by a replica); nothing to do",
                result.tick.isoformat(),
                extra=fields | {"action": "tick_already_run"},
            )
            return
        if result.schedule_paused:
            logger.info(
                "scheduled tick %s: the schedule is paused; recorded, no job created",
                result.tick.isoformat(),
                extra=fields | {"action": "tick_paused"},
            )
            return
        logger.info(
            "scheduled tick %s: created %d job(s); passed over %d active project(s) with a "
            "job in progress, %d with nothing to do and %d paused (%.3f s)",
            result.tick.isoformat(),
            result.created,
            result.skipped_active,
            result.skipped_idle,
            result.skipped_paused,
            result.seconds,
            extra=fields,
        )


def _retrying(unit_of_work: Callable[[], T]) -> T:
    """Run a transaction again if PostgreSQL aborted it for a deadlock or a
    serialization failure (both mean: nothing was written, try again)."""
    for attempt in range(1, _TICK_ATTEMPTS + 1):
        try:
            return unit_of_work()
        except OperationalError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate not in _RETRYABLE_SQLSTATES or attempt == _TICK_ATTEMPTS:
                raise
            logger.warning("transaction aborted (%s); retrying, attempt %d", sqlstate, attempt + 1)
    raise AssertionError("unreachable")
