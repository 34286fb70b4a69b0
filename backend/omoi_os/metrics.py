"""Prometheus metrics (served at GET /metrics).

Counters and histograms live in the process-wide registry and are updated where the
event happens. Gauges of what is in the database (active jobs, queue depth) are read
at scrape time, from indexed queries that stay cheap as history grows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omoi_os.models import ACTIVE_JOB_STATUSES
from omoi_os.services.consolidation import jobs
from omoi_os.services.database import DatabaseService, read_session
from omoi_os.services.task_queue import TaskQueueService

logger = logging.getLogger(__name__)

TRIGGERS = Counter(
    "omoi_consolidation_triggers_total",
    "Trigger decisions, by trigger type and outcome",
    ["trigger_type", "outcome"],
)
TICK_FANOUT_SECONDS = Histogram(
    "omoi_consolidation_tick_fanout_seconds",
    "Time to write one scheduled tick's jobs and queue rows",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
THRESHOLD_CHECK_SECONDS = Histogram(
    "omoi_consolidation_threshold_check_seconds",
    "Time of one threshold check (probe, decision and, if due, the job)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
JOBS_FINISHED = Counter(
    "omoi_consolidation_jobs_finished_total",
    "Consolidation jobs this process ended, by final status",
    ["status"],
)


class DatabaseGauges(Collector):
    """Active jobs by status and queue depth by task type and state, read per scrape."""

    def __init__(self, db: DatabaseService) -> None:
        self._db = db
        self._queue = TaskQueueService(db)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("omoi_database_up", "1 if the database answered this scrape")
        active = GaugeMetricFamily(
            "omoi_consolidation_jobs", "Pending and running consolidation jobs", labels=["status"]
        )
        depth = GaugeMetricFamily(
            "omoi_task_queue_depth", "Unfinished queue tasks", labels=["task_type", "state"]
        )
        try:
            with read_session(self._db.session_factory) as session:
                by_status = jobs.count_jobs_by_status(session, list(ACTIVE_JOB_STATUSES))
                queue_depth = self._queue.depth(session)
        except Exception as exc:  # a scrape must still answer when the database does not
            logger.warning("metrics: database unavailable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        for status, count in by_status.items():
            active.add_metric([status.value], count)
        for (task_type, state), count in queue_depth.items():
            depth.add_metric([task_type, state.value], count)
        return [up, active, depth]


class _Delegate(Collector):
    """Exposes another registry's metrics through this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def build_registry(db: DatabaseService) -> CollectorRegistry:
    """One app's registry: the process-wide metrics plus its database's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Delegate(REGISTRY))
    registry.register(DatabaseGauges(db))
    return registry
