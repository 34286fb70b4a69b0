"""Prometheus metrics of one consolidation service, in a registry of its own.

Counters and histograms are updated where the event happens. Gauges of what is in the
database (active jobs, queue depth) are read at scrape time by a collector the runtime
adds (services/gauges.py). Nothing is registered in prometheus_client's global
registry: two services in one process never share a counter by surprise, and a host
registers ours beside its own (`registry.register(metrics.collector())`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from omoi_os.models import TriggerType

logger = logging.getLogger(__name__)


class ConsolidationMetrics:
    """The counters and histograms of one service, and the registry that holds them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.triggers = Counter(
            "omoi_consolidation_triggers_total",
            "Trigger decisions, by trigger type and outcome",
            ["trigger_type", "outcome"],
            registry=self.registry,
        )
        self.tick_fanout_seconds = Histogram(
            "omoi_consolidation_tick_fanout_seconds",
            "Time to write one scheduled tick's jobs and queue rows",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.threshold_check_seconds = Histogram(
            "omoi_consolidation_threshold_check_seconds",
            "Time of one threshold check (probe, decision and, if due, the job)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "omoi_consolidation_jobs_finished_total",
            "Consolidation jobs this process ended, by final status",
            ["status"],
            registry=self.registry,
        )
        self.retention_deleted = Counter(
            "omoi_retention_rows_deleted_total",
            "History rows retention deleted, by table (task_queue, consolidation_jobs, "
            "consolidation_ticks)",
            ["table"],
            registry=self.registry,
        )

    def count_trigger(self, trigger_type: TriggerType, outcome: StrEnum, amount: int = 1) -> None:
        self.triggers.labels(trigger_type.value, outcome.value).inc(amount)

    def watch(self, gauges: Collector) -> None:
        """Add a scrape-time collector (the database gauges) to this registry."""
        self.registry.register(gauges)

    def collector(self) -> Collector:
        """Everything in this registry, as one collector a host can register in its own."""
        return _RegistryCollector(self.registry)


class _RegistryCollector(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()

    def describe(self) -> Iterable[Metric]:
        # Registering must not scrape (and query the database): names only.
        return []
