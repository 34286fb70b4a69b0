"""Gauges of what is in the database, read at each scrape: whether it answers, the
active jobs by status, the unfinished queue tasks, and how long the oldest claimable
consolidation task has waited, all from indexed queries that stay cheap however much
history, or however deep a queue, there is."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store

logger = logging.getLogger(__name__)


def queue_wait_seconds(session: Session, queue: TaskQueueService, now: datetime) -> float:
    """Seconds since the oldest consolidation task that is claimable at `now` became
    claimable; 0 when none is. Growing without end: no worker is taking tasks."""
    oldest = queue.oldest_claimable_at(
        session=session, task_type=job_store.CONSOLIDATION_TASK, now=now
    )
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


class DatabaseGauges(Collector):
    """omoi_database_up, omoi_consolidation_jobs{status}, omoi_task_queue_depth and
    omoi_consolidation_oldest_claimable_seconds, read from the database at each scrape."""

    def __init__(
        self, db: DatabaseService, queue: TaskQueueService, *, clock: Clock = utc_now
    ) -> None:
        self._db = db
        self._queue = queue
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("omoi_database_up", "1 if the database answered this scrape")
        active = GaugeMetricFamily(
            "omoi_consolidation_jobs", "Pending and running consolidation jobs", labels=["status"]
        )
        depth = GaugeMetricFamily(
            "omoi_task_queue_depth", "Unfinished queue tasks", labels=["task_type", "state"]
        )
        waited = GaugeMetricFamily(
            "omoi_consolidation_oldest_claimable_seconds",
            "Seconds the oldest claimable consolidation task has waited for a worker "
            "(0 when none waits)",
        )
        try:
            with self._db.read() as session:
                by_status = job_store.count_active_jobs(session)
                queue_depth = self._queue.depth(session=session)
                wait = queue_wait_seconds(session, self._queue, self._clock())
        except Exception as exc:  # a scrape must still answer when the database does not
            logger.warning(
                "metrics: database unavailable: %s",
                exc.__class__.__name__,
                extra={"action": "metrics_database_unavailable"},
            )
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        for status, count in by_status.items():
            active.add_metric([status.value], count)
        for (task_type, state), count in queue_depth.items():
            depth.add_metric([task_type, state.value], count)
        waited.add_metric([], wait)
        return [up, active, depth, waited]
