"""Gauges of what is in the database, read at each scrape: whether it answers, the
active jobs by status, and the unfinished queue tasks, all from indexed queries that
stay cheap however much history there is."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store

logger = logging.getLogger(__name__)


class DatabaseGauges(Collector):
    """omoi_database_up, omoi_consolidation_jobs{status} and omoi_task_queue_depth,
    read from the database at each scrape."""

    def __init__(self, db: DatabaseService, queue: TaskQueueService) -> None:
        self._db = db
        self._queue = queue

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
        try:
            with self._db.read() as session:
                by_status = job_store.count_active_jobs(session)
                queue_depth = self._queue.depth(session=session)
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
        return [up, active, depth]
