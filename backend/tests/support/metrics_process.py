"""One process of a multi-process metrics test: `python -m tests.support.metrics_process`.

    count URL STEP...   build runtimes on URL and take each STEP, `runtime:action:project`
                        (runtime: 0, 1 …; action: manual or threshold), then print what
                        this process sees, as JSON
    scrape URL          build a runtime on URL and print, as JSON, /metrics from our route,
                        a host registry holding runtime.metrics.collector(), and a host
                        registry holding its own MultiProcessCollector and our gauges

It runs in a fresh interpreter so that prometheus_client reads PROMETHEUS_MULTIPROC_DIR
(or its absence) at its first import, as a worker process of uvicorn or gunicorn does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from omoi_os import AppSettings, ConsolidationAlreadyActive, ConsolidationRuntime, ops_router
from omoi_os.metrics import ConsolidationMetrics
from tests.support.clocks import quiet_schedule

# The files prometheus_client's multiprocess mode writes (and keeps mapped).
MULTIPROCESS_FILE = re.compile(r"(counter|gauge_\w+|histogram|summary)_\d+\.db$")


def _runtime(url: str) -> ConsolidationRuntime:
    settings = AppSettings(database_url=url, consolidation_schedule=quiet_schedule())
    return ConsolidationRuntime(settings)


def _take(runtime: ConsolidationRuntime, action: str, project: str) -> None:
    if action == "threshold":
        runtime.triggers.check_threshold_triggers_sync(project)
        return
    # A project with an active job is counted as skipped_active: what such a step is for.
    with contextlib.suppress(ConsolidationAlreadyActive):
        runtime.triggers.trigger_consolidation_sync(project, triggered_by="metrics-test")


def _mapped_multiprocess_files() -> list[str]:
    """The metric files mapped into this process (each stays mapped while it lives)."""
    with open("/proc/self/maps") as maps:
        paths = {line.split(maxsplit=5)[-1].strip() for line in maps if line.count(" ") >= 5}
    return sorted(path for path in paths if MULTIPROCESS_FILE.search(path))


def _own_samples(metrics: ConsolidationMetrics) -> dict[str, float | None]:
    registry = metrics.registry
    created = {"trigger_type": "manual", "outcome": "created"}
    return {
        "manual_created": registry.get_sample_value("omoi_consolidation_triggers_total", created),
        "threshold_checks": registry.get_sample_value(
            "omoi_consolidation_threshold_check_seconds_count"
        ),
    }


def count(url: str, steps: list[str]) -> dict[str, Any]:
    runtimes: dict[str, ConsolidationRuntime] = {}
    for step in steps:
        name, action, project = step.split(":")
        runtime = runtimes.setdefault(name, _runtime(url))
        _take(runtime, action, project)
    seen = {name: _own_samples(runtime.metrics) for name, runtime in sorted(runtimes.items())}
    for runtime in runtimes.values():
        runtime.close()
    return {
        "pid": os.getpid(),
        "value_class": values.ValueClass.__name__,
        "mapped_metric_files": _mapped_multiprocess_files(),
        "runtimes": seen,
    }


def scrape(url: str) -> dict[str, Any]:
    runtime = _runtime(url)
    app = FastAPI()
    app.include_router(ops_router(runtime))
    route = TestClient(app).get("/metrics")
    # A host with a counter of its own, written to the same directory.
    host_requests = Counter("host_requests", "The host's own counter", registry=None)
    host_requests.inc(7)
    beside = CollectorRegistry()
    beside.register(runtime.metrics.collector())
    own = CollectorRegistry()
    MultiProcessCollector(own)  # type: ignore[no-untyped-call]
    own.register(runtime.metrics.gauges_collector())
    texts = {
        "route": route.text,
        "collector": generate_latest(beside).decode(),
        "host_multiprocess": generate_latest(own).decode(),
    }
    runtime.close()
    return {"pid": os.getpid(), "status": route.status_code, "texts": texts}


def main(argv: list[str]) -> None:
    command, url, *steps = argv
    result = count(url, steps) if command == "count" else scrape(url)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
