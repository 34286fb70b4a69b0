"""ConsolidationTriggerService: decides when a project's memories are consolidated.

The service the backend's memory and API code call, assembled from its parts:

- `triggers/manual.py`, `triggers/threshold.py`, `triggers/tick.py`: the three
  triggers, each ending in `triggers/job_writer.py`, the one write path (the jobs and
  their queue tasks, in one transaction);
- `scheduler.py`: the APScheduler timers that fire the ticks and the periodic pass.

Every trigger runs in its own short transaction; no session outlives a call. The
database work is synchronous; each method's plain name is awaitable (it runs the
`_sync` twin through `asyncio.to_thread`), and the scheduler's callbacks run on APScheduler's own
threads, never on the event loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.config import AppSettings, get_app_settings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import TriggerType
from omoi_os.services.awaitable import awaitable
from omoi_os.services.consolidation.scheduler import (
    DEFAULT_INTERVAL,
    DEFAULT_STOP_TIMEOUT,
    ConsolidationScheduler,
)
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.consolidation.triggers.job_writer import JobWriter
from omoi_os.services.consolidation.triggers.manual import ManualTrigger
from omoi_os.services.consolidation.triggers.threshold import ThresholdTrigger
from omoi_os.services.consolidation.triggers.tick import TickResult, TickTrigger
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.services.threads import InFlight


class ConsolidationTriggerService:
    """Scheduled, threshold and manual consolidation triggers, and their scheduler."""

    def __init__(
        self,
        db: DatabaseService | Session,
        *,
        settings: AppSettings | None = None,
        task_queue: TaskQueueService | None = None,
        metrics: ConsolidationMetrics | None = None,
        clock: Clock = utc_now,
        periodic: Sequence[Callable[[], Any]] = (),
        periodic_interval: timedelta = DEFAULT_INTERVAL,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        """`db` is the database handle (a Session lends only its engine; the session
        itself is never kept). `periodic` are further steps of the scheduler's
        periodic pass (the sweeper, retention), run after the tick catch-up and the
        deferred threshold crossings."""
        self.db = db if isinstance(db, DatabaseService) else DatabaseService.for_session(db)
        self.settings = settings or get_app_settings()
        self.schedule = self.settings.schedule
        self.task_queue = task_queue or TaskQueueService(
            clock=clock, lease=timedelta(seconds=self.settings.worker_lease_seconds)
        )
        self.metrics = metrics or ConsolidationMetrics()
        self._clock = clock
        writer = JobWriter(self.task_queue, clock=clock)
        in_flight = InFlight()
        self.manual = ManualTrigger(self.db, writer, metrics=self.metrics)
        self.threshold = ThresholdTrigger(
            self.db, writer, settings=self.settings, clock=clock, metrics=self.metrics
        )
        self.ticks = TickTrigger(
            self.db,
            writer,
            settings=self.settings,
            clock=clock,
            metrics=self.metrics,
            in_flight=in_flight,
        )
        self.scheduler = ConsolidationScheduler(
            self.schedule,
            on_tick=self.ticks.run_on_timer,
            periodic=[self.ticks.run_due, self.threshold.fire_deferred, *periodic],
            in_flight=in_flight,
            interval=periodic_interval,
            stop_timeout=stop_timeout,
            clock=clock,
        )

    # --- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the scheduler is running (started and not stopped)."""
        return self.scheduler.running

    def start(self) -> None:
        """Start the scheduler (idempotent). Works inside a running event loop and from
        plain synchronous code alike: the scheduler runs on its own threads."""
        self.scheduler.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the scheduler (idempotent, also if never started), waiting at most
        `timeout` seconds for a callback in progress (see ConsolidationScheduler.stop)."""
        self.scheduler.stop(timeout)

    def next_run_time(self) -> datetime | None:
        """The next tick of the schedule (UTC)."""
        return self.schedule.next_tick(self._clock())

    # --- the three triggers ----------------------------------------------------------

    def trigger_consolidation_sync(
        self,
        project_id: uuid.UUID | str,
        trigger_type: TriggerType = TriggerType.MANUAL,
        scope: ConsolidationScope | dict[str, Any] | None = None,
        triggered_by: str | None = None,
    ) -> int:
        """Create and queue a job now, ignoring the cooldown; returns its id. Raises
        ValidationError (bad scope), ProjectNotFound, ProjectInactive or
        ConsolidationAlreadyActive (naming the active job); nothing is written then."""
        if trigger_type is TriggerType.SCHEDULED:
            raise ValueError("scheduled jobs come from ticks: use run_scheduled_tick_sync(tick)")
        return self.manual.trigger(
            project_id, scope=scope, triggered_by=triggered_by, trigger_type=trigger_type
        )

    def retry_sync(self, job_id: int, *, triggered_by: str | None = None) -> int:
        """A new job retrying failed or timed-out job `job_id` (same project and scope;
        the manual trigger's rules); returns its id. A failure is retried once: a job that
        has its retry raises JobAlreadyRetried, naming it. Raises JobNotFound,
        JobNotRetryable, ProjectInactive or ConsolidationAlreadyActive; nothing is written
        then."""
        return self.manual.retry(job_id, triggered_by=triggered_by)

    def check_threshold_triggers_sync(self, project_id: uuid.UUID | str) -> int | None:
        """Call after a memory write commits: start a job if the project's unconsolidated
        memories reached the threshold, no job is active and the cooldown is over.
        Returns the new job's id, or None. Raises ProjectNotFound."""
        return self.threshold.check(project_id)

    def run_scheduled_tick_sync(self, tick: datetime) -> TickResult:
        """Run one tick now (idempotent per tick, across replicas)."""
        return self.ticks.run_tick(tick)

    trigger_consolidation = awaitable(trigger_consolidation_sync)
    retry = awaitable(retry_sync)
    check_threshold_triggers = awaitable(check_threshold_triggers_sync)
    run_scheduled_tick = awaitable(run_scheduled_tick_sync)
