"""Prometheus metrics of one consolidation service, and the registry that serves them.

Counters and histograms are updated where the event happens. Gauges of what is in the
database (active jobs, queue depth) are read at scrape time by a collector the runtime
adds (services/gauges.py): every process reads the same rows, so they are served once,
never summed, and never written to a file. No Gauge of ours lives in process memory, so
none needs a `multiprocess_mode`. Nothing is registered in prometheus_client's global
registry; a host registers ours beside its own (`registry.register(metrics.collector())`).

Where the counters' values live is prometheus_client's decision, taken once per process
when `prometheus_client.values` is first imported:

- PROMETHEUS_MULTIPROC_DIR unset (one process): each service keeps its counters in a
  registry of its own, so two services in one process never share a counter by surprise.
- PROMETHEUS_MULTIPROC_DIR set (`uvicorn --workers N`, gunicorn): every value is written
  to that directory, one file per process and metric type, and the registry serves the
  sum over every process's files (our families only, not the host's). The services of
  one process then share one set of counters: two sets would overwrite each other's
  values in the process's one file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import StrEnum
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from omoi_os.models import TriggerType

logger = logging.getLogger(__name__)


def multiprocess_mode() -> bool:
    """Whether prometheus_client writes this process's metric values to
    PROMETHEUS_MULTIPROC_DIR (it decided when it was first imported)."""
    # The environment now may differ from the one it read then; its value class is
    # where every value actually goes.
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class _Instruments:
    """The counters and histograms, registered in `registry` (None: in no registry)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.triggers = Counter(
            "omoi_consolidation_triggers_total",
            "Trigger decisions, by trigger type and outcome",
            ["trigger_type", "outcome"],
            registry=registry,
        )
        self.tick_fanout_seconds = Histogram(
            "omoi_consolidation_tick_fanout_seconds",
            "Time to write one scheduled tick's jobs and queue rows",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.threshold_check_seconds = Histogram(
            "omoi_consolidation_threshold_check_seconds",
            "Time of one threshold check (probe, decision and, if due, the job)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=registry,
        )
        self.jobs_finished = Counter(
            "omoi_consolidation_jobs_finished_total",
            "Consolidation jobs this process ended, by final status",
            ["status"],
            registry=registry,
        )
        self.retention_deleted = Counter(
            "omoi_retention_rows_deleted_total",
            "History rows retention deleted, by table (task_queue, consolidation_jobs, "
            "consolidation_ticks)",
            ["table"],
            registry=registry,
        )

    def family_names(self) -> frozenset[str]:
        """The names of our families, as a scrape of the multiprocess files calls them."""
        instruments = (
            self.triggers,
            self.tick_fanout_seconds,
            self.threshold_check_seconds,
            self.jobs_finished,
            self.retention_deleted,
        )
        return frozenset(family.name for metric in instruments for family in metric.describe())


@cache
def _process_instruments() -> _Instruments:
    """The one set of instruments of this process, in multiprocess mode."""
    return _Instruments(registry=None)


class ConsolidationMetrics:
    """The counters and histograms of one service, and the registry that serves them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if multiprocess_mode():
            instruments = _process_instruments()
            # Raises ValueError if PROMETHEUS_MULTIPROC_DIR is not a directory.
            every_process = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
            self.registry.register(_Families(every_process, instruments.family_names()))
        else:
            instruments = _Instruments(self.registry)
        self.triggers = instruments.triggers
        self.tick_fanout_seconds = instruments.tick_fanout_seconds
        self.threshold_check_seconds = instruments.threshold_check_seconds
        self.jobs_finished = instruments.jobs_finished
        self.retention_deleted = instruments.retention_deleted
        self._watched: list[Collector] = []

    def count_trigger(self, trigger_type: TriggerType, outcome: StrEnum, amount: int = 1) -> None:
        self.triggers.labels(trigger_type.value, outcome.value).inc(amount)

    def watch(self, gauges: Collector) -> None:
        """Add a scrape-time collector (the database gauges) to this registry."""
        self.registry.register(gauges)
        self._watched.append(gauges)

    def collector(self) -> Collector:
        """Everything in this registry, as one collector a host can register in its own."""
        return _RegistryCollector(self.registry)

    def gauges_collector(self) -> Collector:
        """The scrape-time collectors alone, for a host whose own MultiProcessCollector
        already serves our counters (registering collector() too would repeat them)."""
        return _Chain(self._watched)


class _RegistryCollector(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()

    def describe(self) -> Iterable[Metric]:
        # Registering must not scrape (and query the database): names only.
        return []


class _Chain(Collector):
    def __init__(self, collectors: list[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()

    def describe(self) -> Iterable[Metric]:
        return []


class _Families(Collector):
    """The families named `names` from `source`: a MultiProcessCollector reads every
    file in the directory, the host's metrics too, and those are the host's to serve."""

    def __init__(self, source: Collector, names: frozenset[str]) -> None:
        self._source = source
        self._names = names

    def collect(self) -> Iterable[Metric]:
        return [family for family in self._source.collect() if family.name in self._names]

    def describe(self) -> Iterable[Metric]:
        return []
