"""ConsolidationRuntime: everything one host application runs, built once.

The one entry point a host backend uses (the standalone `omoi-os serve` is one such
host). It builds the database handle (from settings, or from the host's own Engine
so the host keeps one pool), one task queue shared by the triggers, the worker and
the metrics, the triggers and their scheduler, the sweeper, the worker, and the
services behind the HTTP routes. Building it does no I/O; `start()` (or `async with
runtime.lifespan():` inside the host's own lifespan) checks the schema and starts the
scheduler and, if enabled, the worker; `stop()` stops both.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from omoi_os import migrations
from omoi_os.clock import Clock
from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.services.consolidation.job_service import JobService
from omoi_os.services.consolidation.retention import Retention
from omoi_os.services.consolidation.schedule_service import ScheduleService
from omoi_os.services.consolidation.sweeper import Sweeper
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService, sync_twin_of
from omoi_os.services.database_clock import DatabaseClock
from omoi_os.services.gauges import DatabaseGauges
from omoi_os.services.health import HealthCheck
from omoi_os.services.memory import MemoryService
from omoi_os.services.projects import ProjectService
from omoi_os.services.task_queue import TaskQueueService

if TYPE_CHECKING:  # SQLAlchemy's asyncio needs greenlet: only an async host has it
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 10.0


class ConsolidationRuntime:
    """The consolidation service of one host: its parts, and their start and stop."""

    def __init__(
        self,
        settings: AppSettings | None = None,
        *,
        engine: Engine | AsyncEngine | None = None,
        clock: Clock | None = None,
    ) -> None:
        """`settings` default to the `OMOI_*` environment. `engine` is the host's: a
        SQLAlchemy `Engine` is shared (its pool, its disposal), instead of one opened
        from `settings.database_url`; with an `AsyncEngine` our threads get a pool of
        their own on its database (services.database.sync_twin_of says why), and the
        host's `AsyncSession` is what `memories.add` writes in. `clock` defaults to the
        database's (DatabaseClock): every replica decides leases, time-outs, cooldowns
        and ticks on the same time."""
        self.settings = settings if settings is not None else AppSettings()
        self.db = _database(engine, self.settings)
        self.database_clock: DatabaseClock | None = None
        if clock is None:
            clock = self.database_clock = DatabaseClock(self.db)
        self.metrics = ConsolidationMetrics()
        self.queue = TaskQueueService(
            clock=clock, lease=timedelta(seconds=self.settings.worker_lease_seconds)
        )
        settings, metrics = self.settings, self.metrics
        self.sweeper = Sweeper(self.db, self.queue, settings=settings, clock=clock, metrics=metrics)
        self.retention = Retention(self.db, settings=settings, clock=clock, metrics=metrics)
        self.triggers = ConsolidationTriggerService(
            self.db,
            settings=settings,
            task_queue=self.queue,
            metrics=metrics,
            clock=clock,
            # Retention after the sweeper: a dead task goes only once its job has ended.
            periodic=[self.synchronize_clock, self.sweeper.sweep, self.retention.purge_if_due],
        )
        self.worker = ConsolidationWorker(
            self.db, settings=settings, queue=self.queue, metrics=metrics, clock=clock
        )
        self.projects = ProjectService(self.db, settings=settings, queue=self.queue, clock=clock)
        self.schedule = ScheduleService(self.db, clock=clock)
        self.memories = MemoryService(self.db, self.triggers, clock=clock)
        self.jobs = JobService(self.db, queue=self.queue, clock=clock)
        self.health = HealthCheck(
            self.db, self.queue, settings=settings, clock=clock, database_clock=self.database_clock
        )
        self.metrics.watch(DatabaseGauges(self.db, self.queue, clock=clock))
        self._lifecycle = threading.Lock()

    def synchronize_clock(self) -> None:
        """Read the database's time (start() does, and the periodic pass every 30 s);
        a short-lived caller that never starts the runtime calls it once. Nothing to do
        with an injected clock."""
        if self.database_clock is not None:
            self.database_clock.synchronize()

    @property
    def running(self) -> bool:
        """Whether the scheduler is running (started and not stopped)."""
        return self.triggers.running

    def start(self) -> None:
        """Check the schema (SchemaNotCurrent names the command that fixes it), then
        start the scheduler and, if `worker_enabled`, the worker. Idempotent."""
        with self._lifecycle:
            migrations.ensure_current(self.db.engine)
            self.synchronize_clock()
            self.triggers.start()
            if self.settings.worker_enabled:
                self.worker.start()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the worker (its job is handed back after the batch in progress), then
        the scheduler. Idempotent; harmless if never started. A start() still under way
        on another thread finishes first, so nothing it starts is left running."""
        with self._lifecycle:
            self.worker.stop(timeout)
            self.triggers.stop(timeout)

    def close(self) -> None:
        """Stop, and close the database connections this runtime opened (a host's own
        engine is left open)."""
        self.stop()
        self.db.dispose()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[ConsolidationRuntime]:
        """`async with runtime.lifespan():` inside a host's lifespan: started on entry,
        stopped on exit — also when the host's start-up fails after this began, or
        the lifespan is cancelled — and the connections of our own pool closed (a
        host's Engine is left open). Blocking work runs off the event loop."""
        try:
            await asyncio.to_thread(self.start)
            yield self
        finally:
            await _run_to_the_end(asyncio.to_thread(self.close))


def _database(engine: Engine | AsyncEngine | None, settings: AppSettings) -> DatabaseService:
    if engine is None:
        return DatabaseService(settings=settings)
    if isinstance(engine, Engine):
        return DatabaseService.from_engine(engine, settings=settings)
    ours = sync_twin_of(engine, pool_size=settings.database_pool_size)
    return DatabaseService.owning(ours, settings=settings)


async def _run_to_the_end(work: Awaitable[None]) -> None:
    """Await `work` to its end even if the awaiting task is cancelled meanwhile (then
    re-raise the cancellation): a cancelled lifespan must still stop what it started."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError
