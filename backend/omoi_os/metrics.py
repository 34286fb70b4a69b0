"""Prometheus metrics of the consolidation triggers (served at GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
