"""What /healthz reports: whether the database answers and the scheduler runs (the
two that make a replica unhealthy), and how long the oldest claimable consolidation
task has waited for a worker.

The queue's wait never makes a replica unhealthy: workers may run in other processes
(`omoi-os worker`), and a liveness probe that failed on it would restart API pods for
a fault that is elsewhere. It is reported beside, flagged once it passes
`health_queue_wait_limit`, so that "no worker is running" is visible at a glance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omoi_os.clock import Clock
from omoi_os.config import AppSettings
from omoi_os.services.awaitable import awaitable
from omoi_os.services.database import DatabaseService
from omoi_os.services.database_clock import DatabaseClock
from omoi_os.services.gauges import queue_wait_seconds
from omoi_os.services.task_queue import TaskQueueService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthReport:
    database_ok: bool
    scheduler_running: bool
    # None when the database did not answer.
    oldest_claimable_seconds: float | None
    queue_wait_limit: int
    # The database's time minus this machine's (None where they are one clock).
    clock_skew_seconds: float | None = None
    clock_skewed: bool = False

    @property
    def healthy(self) -> bool:
        """What decides the probe's answer (the queue's wait does not)."""
        return self.database_ok and self.scheduler_running

    @property
    def queue_stalled(self) -> bool:
        """The oldest claimable task waited past the limit: no worker, or too few."""
        waited = self.oldest_claimable_seconds
        return waited is not None and waited > self.queue_wait_limit


class HealthCheck:
    """Reads what /healthz reports, in one read-only transaction (on SQLite it never
    waits behind the writer)."""

    def __init__(
        self,
        db: DatabaseService,
        queue: TaskQueueService,
        *,
        settings: AppSettings,
        clock: Clock,
        database_clock: DatabaseClock | None = None,
    ) -> None:
        self._db = db
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self._database_clock = database_clock

    def check_sync(self, *, scheduler_running: bool) -> HealthReport:
        """What /healthz reports (never raises: a database that does not answer is
        reported as such)."""
        waited = self._oldest_claimable_seconds()
        skew = None if self._database_clock is None else self._database_clock.skew
        return HealthReport(
            database_ok=waited is not None,
            scheduler_running=scheduler_running,
            oldest_claimable_seconds=waited,
            queue_wait_limit=self._settings.health_queue_wait_limit,
            clock_skew_seconds=None if skew is None else skew.total_seconds(),
            clock_skewed=self._database_clock is not None and self._database_clock.skewed,
        )

    def _oldest_claimable_seconds(self) -> float | None:
        """The queue's wait; None if the database does not answer (then logged)."""
        try:
            with self._db.read() as session:
                return queue_wait_seconds(session, self._queue, self._clock())
        except Exception as exc:  # any failure to answer is "unavailable" here
            logger.warning(
                "health check: database unavailable: %s",
                exc.__class__.__name__,
                extra={"action": "health_database_unavailable"},
            )
            return None

    check = awaitable(check_sync)
