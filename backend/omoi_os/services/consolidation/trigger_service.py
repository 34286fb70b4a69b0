"""ConsolidationTriggerService: decides when a project's memories are consolidated.

Three triggers, one code path. A cron tick (`run_scheduled_tick`), a memory write
that crosses the threshold (`check_threshold_triggers`) and a manual call
(`trigger_consolidation`) all end in the same unit of work: insert the job with
`ON CONFLICT DO NOTHING` and enqueue its task in the same transaction. The
database's indexes make every trigger fire once: one active job per project, one
scheduled job per project per tick, however many replicas race.

Every trigger runs in its own short transaction from the session factory; no
session outlives a call. The database work is synchronous; async callers go
through `asyncio.to_thread` (the `async def` methods), and the scheduler's
callbacks run on APScheduler's own worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from omoi_os import migrations
from omoi_os.clock import Clock, utc_now
from omoi_os.config import AppSettings, get_app_settings
from omoi_os.metrics import (
    JOBS_FINISHED,
    THRESHOLD_CHECK_SECONDS,
    TICK_FANOUT_SECONDS,
    TRIGGERS,
)
from omoi_os.models import JobStatus, Project, TriggerType
from omoi_os.services.consolidation import jobs
from omoi_os.services.consolidation.decisions import (
    CatchUp,
    TriggerOutcome,
    decide_catch_up,
    decide_threshold,
    due_tick,
)
from omoi_os.services.consolidation.errors import (
    ConsolidationAlreadyActive,
    ConsolidationError,
    ProjectInactive,
    ProjectNotFound,
)
from omoi_os.services.consolidation.schedule import ScheduleTrigger
from omoi_os.services.consolidation.scope import DEFAULT_SCOPE, ConsolidationScope, parse_scope
from omoi_os.services.database import (
    DatabaseService,
    SessionFactory,
    as_session_factory,
    engine_of,
    raw_connection,
    read_session,
)
from omoi_os.services.lifecycle import InFlight
from omoi_os.services.task_queue import TaskQueueService

logger = logging.getLogger(__name__)

SCHEDULED_JOB_ID = "consolidation-scheduled-tick"
SWEEPER_JOB_ID = "consolidation-sweeper"

THRESHOLD_PRINCIPAL = "threshold"
SYSTEM_PRINCIPAL = "system"

# A job may overrun consolidation_timeout by this much before the sweeper calls it
# dead: the worker enforces the timeout itself; the sweeper is for dead workers.
TIMEOUT_GRACE = timedelta(seconds=60)
DEFAULT_SWEEP_INTERVAL = timedelta(seconds=30)
DEFAULT_STOP_TIMEOUT = 10.0
INTERRUPT_GRACE_S = 5.0
# PostgreSQL SQLSTATEs worth one more try: deadlock, serialization failure.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}
_TICK_ATTEMPTS = 3
_CONFLICT_ATTEMPTS = 3

T = TypeVar("T")


@dataclass(frozen=True)
class TickResult:
    """What one run of a scheduled tick did."""

    tick: datetime
    created: int  # jobs this run created (and queued)
    skipped_active: int  # active projects passed over because a job was running
    already_recorded: bool  # another run (here or on a replica) had done this tick
    seconds: float


class ConsolidationTriggerService:
    """Scheduled, threshold and manual consolidation triggers, and their scheduler."""

    def __init__(
        self,
        db: Session | DatabaseService | SessionFactory | Engine,
        *,
        settings: AppSettings | None = None,
        task_queue: TaskQueueService | None = None,
        clock: Clock = utc_now,
        sweep_interval: timedelta = DEFAULT_SWEEP_INTERVAL,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        # Given a Session (as the task card does), only its engine is used.
        self._sessions = as_session_factory(db)
        self.settings = settings or get_app_settings()
        self.schedule = self.settings.schedule
        self.task_queue = task_queue or TaskQueueService(self._sessions, clock=clock)
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._stop_timeout = stop_timeout
        self._scheduler: BackgroundScheduler | None = None
        self._callbacks = InFlight()

    # --- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    def start(self) -> None:
        """Start the scheduler (idempotent). Works inside a running event loop and from
        plain synchronous code alike: the scheduler runs on its own thread."""
        if self._scheduler is not None:
            return
        self._callbacks = InFlight()
        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(
            self._guarded(self.run_due_tick),
            ScheduleTrigger(self.schedule),
            id=SCHEDULED_JOB_ID,
            name="consolidation: scheduled tick",
            replace_existing=True,
            coalesce=True,  # several missed run times → one run
            max_instances=1,
            misfire_grace_time=max(1, self.settings.consolidation_misfire_grace),
        )
        scheduler.add_job(
            self._guarded(self.maintain),
            IntervalTrigger(seconds=self._sweep_interval.total_seconds(), timezone=UTC),
            id=SWEEPER_JOB_ID,
            name="consolidation: sweeper",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
        )
        scheduler.start()
        self._scheduler = scheduler
        # The tick that passed while nothing ran, once, right after start. Its own
        # thread rather than a one-off APScheduler job: APScheduler 3 raises
        # JobLookupError in its thread if shutdown() races the removal of a one-off job.
        threading.Thread(
            target=self._guarded(self.catch_up_at_start),
            name="consolidation-catch-up",
            daemon=True,
        ).start()
        logger.info(
            "consolidation scheduler started: schedule %s, next tick %s",
            self.schedule,
            self.next_run_time(),
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop the scheduler (idempotent, also if never started). A callback already
        running gets `timeout` seconds to finish; its transaction commits or rolls back
        as a whole either way, so stopping never leaves half a trigger behind."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        self._callbacks.close()
        scheduler.shutdown(wait=False)
        bound = self._stop_timeout if timeout is None else timeout
        if not self._callbacks.wait_idle(bound):
            self._interrupt_stragglers(bound)
        logger.info("consolidation scheduler stopped")

    def _interrupt_stragglers(self, waited: float) -> None:
        """Cancel the statement of a tick still writing: its transaction rolls back
        whole, and the tick is caught up at the next start."""
        interrupted = self._callbacks.interrupt_all()
        if interrupted and self._callbacks.wait_idle(INTERRUPT_GRACE_S):
            logger.warning(
                "consolidation scheduler stopped after %.1f s by cancelling "
                "%d statement(s); they rolled back",
                waited,
                interrupted,
            )
            return
        logger.warning(
            "consolidation scheduler stopped with %d callback(s) still running after %.1f s "
            "(%d statement(s) cancelled); their transactions commit or roll back on their own",
            self._callbacks.running,
            waited,
            interrupted,
        )

    def next_run_time(self) -> datetime | None:
        """The next tick of the schedule (UTC)."""
        return self.schedule.next_tick(self._clock())

    # --- manual (and any explicit) trigger --------------------------------------------

    async def trigger_consolidation(
        self,
        project_id: uuid.UUID | str,
        trigger_type: TriggerType,
        scope: ConsolidationScope | dict[str, Any] | None = None,
        triggered_by: str | None = None,
    ) -> int:
        """Create and queue a job now; returns its id. See trigger_consolidation_sync."""
        return await asyncio.to_thread(
            self.trigger_consolidation_sync, project_id, trigger_type, scope, triggered_by
        )

    def trigger_consolidation_sync(
        self,
        project_id: uuid.UUID | str,
        trigger_type: TriggerType = TriggerType.MANUAL,
        scope: ConsolidationScope | dict[str, Any] | None = None,
        triggered_by: str | None = None,
    ) -> int:
        """Create and queue a job now, ignoring the cooldown; returns its id.

        Raises ValidationError (bad scope), ProjectNotFound, ProjectInactive or
        ConsolidationAlreadyActive (with the active job's id); nothing is written then.
        """
        if trigger_type is TriggerType.SCHEDULED:
            raise ValueError("scheduled jobs come from ticks: use run_scheduled_tick(tick)")
        try:
            job_id = self._trigger_now(project_id, trigger_type, parse_scope(scope), triggered_by)
        except (ValidationError, ConsolidationError) as exc:
            outcome = (
                TriggerOutcome.SKIPPED_ACTIVE
                if isinstance(exc, ConsolidationAlreadyActive)
                else TriggerOutcome.REJECTED
            )
            TRIGGERS.labels(trigger_type.value, outcome.value).inc()
            logger.info(
                "%s trigger for project %s: %s (%s)", trigger_type, project_id, outcome, exc
            )
            raise
        TRIGGERS.labels(trigger_type.value, TriggerOutcome.CREATED.value).inc()
        logger.info(
            "%s trigger for project %s: created job %d (by %s)",
            trigger_type,
            project_id,
            job_id,
            triggered_by or SYSTEM_PRINCIPAL,
        )
        return job_id

    def _trigger_now(
        self,
        project_id: uuid.UUID | str,
        trigger_type: TriggerType,
        scope: ConsolidationScope,
        triggered_by: str | None,
    ) -> int:
        project = _as_project_id(project_id)
        with self._sessions.begin() as session:
            _require_active_project(session, project)
            # A conflict means an active job exists; read its id to report it. Should
            # that job finish in between, the insert is simply tried again.
            for _ in range(_CONFLICT_ATTEMPTS):
                job_id = self._create_job(
                    session, project, trigger_type, scope, triggered_by or SYSTEM_PRINCIPAL
                )
                if job_id is not None:
                    return job_id
                active_job_id = jobs.active_job_id(session, project)
                if active_job_id is not None:
                    raise ConsolidationAlreadyActive(project, active_job_id)
        raise RuntimeError(f"project {project}: could neither create nor find its active job")

    # --- threshold trigger -----------------------------------------------------------

    async def check_threshold_triggers(self, project_id: uuid.UUID | str) -> int | None:
        """Async form of check_threshold_triggers_sync."""
        return await asyncio.to_thread(self.check_threshold_triggers_sync, project_id)

    def check_threshold_triggers_sync(self, project_id: uuid.UUID | str) -> int | None:
        """Called after a memory write commits: start a job if the project's
        unconsolidated memories reached the threshold, no job is active and the
        cooldown is over. Returns the new job's id, or None."""
        project = _as_project_id(project_id)
        started = time.perf_counter()
        job_id, outcome = self._check_threshold(project)
        THRESHOLD_CHECK_SECONDS.observe(time.perf_counter() - started)
        TRIGGERS.labels(TriggerType.THRESHOLD.value, outcome.value).inc()
        if job_id is not None:
            logger.info("threshold trigger for project %s: created job %d", project, job_id)
        else:
            logger.debug("threshold trigger for project %s: %s", project, outcome)
        return job_id

    def _check_threshold(self, project: uuid.UUID) -> tuple[int | None, TriggerOutcome]:
        threshold = self.settings.consolidation_threshold
        now = self._clock()
        with self._sessions.begin() as session:
            probe = jobs.probe_threshold(session, project, threshold)
            if probe is None:
                raise ProjectNotFound(project)
            outcome = decide_threshold(
                probe,
                threshold=threshold,
                cooldown=timedelta(seconds=self.settings.consolidation_cooldown),
                now=now,
            )
            if outcome is not TriggerOutcome.CREATED:
                return None, outcome
            debounce = timedelta(seconds=self.settings.consolidation_debounce)
            job_id = self._create_job(
                session,
                project,
                TriggerType.THRESHOLD,
                DEFAULT_SCOPE,
                THRESHOLD_PRINCIPAL,
                available_at=now + debounce,
            )
        # None: a concurrent write crossed the threshold first and its job won.
        return job_id, TriggerOutcome.CREATED if job_id else TriggerOutcome.SKIPPED_ACTIVE

    # --- the one write path of manual and threshold triggers ----------------------------

    def _create_job(
        self,
        session: Session,
        project: uuid.UUID,
        trigger_type: TriggerType,
        scope: ConsolidationScope,
        triggered_by: str,
        *,
        available_at: datetime | None = None,
    ) -> int | None:
        """Insert the job and queue its task in the caller's transaction (invariant 3).
        None if the project already has an active job (invariant 1)."""
        job_id = jobs.insert_job(
            session,
            project_id=project,
            trigger_type=trigger_type,
            scope=scope.to_document(),
            triggered_by=triggered_by,
            now=self._clock(),
        )
        if job_id is not None:
            self.task_queue.enqueue(
                jobs.CONSOLIDATION_TASK,
                str(job_id),
                {"trigger_type": trigger_type.value},
                session=session,
                available_at=available_at,
            )
        return job_id

    # --- scheduled trigger -------------------------------------------------------------

    def run_due_tick(self) -> TickResult | None:
        """The scheduler's callback: run the latest tick at or before now."""
        tick = due_tick(self.schedule, self._clock())
        return None if tick is None else self.run_scheduled_tick(tick)

    def run_scheduled_tick(self, tick: datetime) -> TickResult:
        """Write a job and its queue task for `tick` for every active project without an
        active job, set-based, in one transaction. Running a tick again, here or on
        another replica, creates nothing more (invariant 2)."""
        tick = tick.astimezone(UTC)
        started = time.perf_counter()
        result = _retrying(lambda: self._fan_out(tick, started))
        TICK_FANOUT_SECONDS.observe(result.seconds)
        TRIGGERS.labels(TriggerType.SCHEDULED.value, TriggerOutcome.CREATED.value).inc(
            result.created
        )
        TRIGGERS.labels(TriggerType.SCHEDULED.value, TriggerOutcome.SKIPPED_ACTIVE.value).inc(
            result.skipped_active
        )
        if result.already_recorded:
            TRIGGERS.labels(
                TriggerType.SCHEDULED.value, TriggerOutcome.SKIPPED_RECORDED.value
            ).inc()
            logger.info(
                "scheduled tick %s: already run (here or by a replica); nothing to do",
                tick.isoformat(),
            )
            return result
        logger.info(
            "scheduled tick %s: created %d job(s); %d active project(s) skipped with a job "
            "in progress (%.3f s)",
            tick.isoformat(),
            result.created,
            result.skipped_active,
            result.seconds,
        )
        return result

    def _fan_out(self, tick: datetime, started: float) -> TickResult:
        now = self._clock()
        with (
            self._sessions.begin() as session,
            self._callbacks.interruptible(raw_connection(session)),
        ):
            if not jobs.record_tick(session, tick, now=now):
                return TickResult(tick, 0, 0, True, time.perf_counter() - started)
            created = jobs.insert_tick_jobs(
                session, tick=tick, scope=DEFAULT_SCOPE.to_document(), now=now
            )
            queued = 0
            if created:
                queued = self.task_queue.enqueue_select(
                    session,
                    jobs.CONSOLIDATION_TASK,
                    jobs.tick_job_task_ids(tick),
                    {"trigger_type": TriggerType.SCHEDULED.value},
                )
            if queued != created:  # every job has its task: anything else is a bug
                raise RuntimeError(f"tick {tick}: {created} jobs but {queued} queue rows")
            jobs.set_tick_jobs_created(session, tick, created)
            active_projects = jobs.count_active_projects(session)
        skipped = max(active_projects - created, 0)
        return TickResult(tick, created, skipped, False, time.perf_counter() - started)

    def catch_up_at_start(self) -> CatchUp:
        """At start-up: say clearly if the database is not migrated (no tick can run),
        else run the latest tick if it was missed (see catch_up_missed_tick)."""
        try:
            migrations.ensure_current(engine_of(self._sessions))
        except migrations.SchemaNotCurrent as exc:
            logger.warning("scheduled consolidation cannot run: %s", exc)
            return CatchUp.NOT_NEEDED
        return self.catch_up_missed_tick(report_too_old=True)

    def catch_up_missed_tick(self, *, report_too_old: bool = True) -> CatchUp:
        """Run the latest tick once if no run of it committed and it is younger than
        consolidation_misfire_grace (every replica was down, or its run failed); older
        misses are skipped and, if `report_too_old`, logged."""
        now = self._clock()
        latest = self.schedule.latest_tick(now)
        with read_session(self._sessions) as session:
            recorded = latest is not None and jobs.tick_recorded(session, latest)
        grace = timedelta(seconds=self.settings.consolidation_misfire_grace)
        decision = decide_catch_up(latest, recorded, now, grace)
        if decision is CatchUp.RUN and latest is not None:
            logger.info("catching up missed tick %s", latest.isoformat())
            self.run_scheduled_tick(latest)
        elif decision is CatchUp.TOO_OLD and latest is not None and report_too_old:
            logger.info(
                "missed tick %s is older than consolidation_misfire_grace (%s); skipped",
                latest.isoformat(),
                grace,
            )
        return decision

    def maintain(self) -> None:
        """The periodic job: end jobs that cannot finish, and retry a tick whose run
        failed while this replica kept running."""
        self.sweep()
        self.catch_up_missed_tick(report_too_old=False)

    # --- sweeper ---------------------------------------------------------------------

    def sweep(self) -> list[int]:
        """Free projects whose job can no longer finish: running past the timeout plus a
        grace (timed_out; its queue task is abandoned), or whose queue task is dead
        (failed). Returns the ids of the jobs it ended."""
        now = self._clock()
        overdue = timedelta(seconds=self.settings.consolidation_timeout) + TIMEOUT_GRACE
        reason = (
            f"ran longer than consolidation_timeout ({self.settings.consolidation_timeout} s) "
            f"plus {TIMEOUT_GRACE.seconds} s; ended by the sweeper"
        )
        with self._sessions.begin() as session:
            timed_out = jobs.time_out_overdue(
                session, started_before=now - overdue, now=now, reason=reason
            )
            self.task_queue.abandon(
                session, jobs.CONSOLIDATION_TASK, [str(job_id) for job_id, _ in timed_out], reason
            )
            failed = jobs.fail_jobs_with_dead_tasks(session, now=now)
        JOBS_FINISHED.labels(JobStatus.TIMED_OUT.value).inc(len(timed_out))
        JOBS_FINISHED.labels(JobStatus.FAILED.value).inc(len(failed))
        for job_id, project in timed_out:
            logger.warning("sweeper: job %d of project %s timed out", job_id, project)
        for job_id, project in failed:
            logger.warning(
                "sweeper: job %d of project %s failed: its queue task is dead", job_id, project
            )
        return [job_id for job_id, _ in timed_out + failed]

    # --- scheduler plumbing ----------------------------------------------------------

    def _guarded(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Wrap a scheduler callback: not after stop() began, counted while it runs, and
        its failure logged (with what it was doing) instead of lost."""
        callbacks = self._callbacks

        def run() -> None:
            with callbacks.enter() as admitted:
                if not admitted:
                    return
                try:
                    callback()
                except OperationalError as exc:  # the database is down: one line, no trace
                    logger.warning(
                        "consolidation %s: database unavailable: %s", callback.__name__, exc.orig
                    )
                except Exception:
                    logger.exception("consolidation %s failed", callback.__name__)

        run.__name__ = callback.__name__
        return run


def _as_project_id(project_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(project_id, uuid.UUID):
        return project_id
    try:
        return uuid.UUID(str(project_id))
    except ValueError:
        raise ProjectNotFound(project_id) from None


def _require_active_project(session: Session, project_id: uuid.UUID) -> None:
    is_active = session.scalar(select(Project.is_active).where(Project.id == project_id))
    if is_active is None:
        raise ProjectNotFound(project_id)
    if not is_active:
        raise ProjectInactive(project_id)


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
