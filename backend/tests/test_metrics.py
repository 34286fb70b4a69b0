"""metrics.py: each service's own registry, the database gauges read at scrape time
from real rows on both databases, a scrape that answers while the database does not,
and the collector a host registers in its own registry."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import JobStatus, TriggerType
from omoi_os.services.consolidation.decisions import TriggerOutcome
from omoi_os.services.database import DatabaseService
from omoi_os.services.gauges import DatabaseGauges
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store.jobs import CONSOLIDATION_TASK
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.logs import one, records

GAUGES = ("omoi_database_up", "omoi_consolidation_jobs", "omoi_task_queue_depth")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(registry: CollectorRegistry, names: Iterable[str] = GAUGES) -> Samples:
    """Every sample of the families `names` in the registry's text exposition."""
    exposition = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name in names
        for sample in family.samples
    }


def _gauges_registry(gauges: DatabaseGauges) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(gauges)
    return registry


# --- counters belong to one service --------------------------------------------------------


def test_two_metrics_instances_do_not_share_counters() -> None:
    first, second = ConsolidationMetrics(), ConsolidationMetrics()
    created = {"trigger_type": "manual", "outcome": "created"}

    first.count_trigger(TriggerType.MANUAL, TriggerOutcome.CREATED)
    first.count_trigger(TriggerType.MANUAL, TriggerOutcome.CREATED, 2)
    second.count_trigger(TriggerType.THRESHOLD, TriggerOutcome.SKIPPED_COOLDOWN)
    first.jobs_finished.labels("completed").inc()
    first.threshold_check_seconds.observe(0.002)

    assert first.registry is not second.registry
    assert first.registry.get_sample_value("omoi_consolidation_triggers_total", created) == 3.0
    assert second.registry.get_sample_value("omoi_consolidation_triggers_total", created) is None
    cooldown = {"trigger_type": "threshold", "outcome": "skipped_cooldown"}
    assert second.registry.get_sample_value("omoi_consolidation_triggers_total", cooldown) == 1.0
    assert first.registry.get_sample_value("omoi_consolidation_triggers_total", cooldown) is None
    finished = {"status": "completed"}
    assert first.registry.get_sample_value("omoi_consolidation_jobs_finished_total", finished) == 1
    assert (
        second.registry.get_sample_value("omoi_consolidation_jobs_finished_total", finished) is None
    )
    assert first.registry.get_sample_value("omoi_consolidation_threshold_check_seconds_count") == 1
    assert second.registry.get_sample_value("omoi_consolidation_threshold_check_seconds_count") == 0
    # Nothing went to prometheus_client's global registry.
    assert REGISTRY.get_sample_value("omoi_consolidation_triggers_total", created) is None


# --- the database gauges -----------------------------------------------------------------


def test_database_gauges_of_an_empty_database(db: DatabaseService) -> None:
    registry = _gauges_registry(DatabaseGauges(db, TaskQueueService()))

    assert _samples(registry) == {
        ("omoi_database_up", ()): 1.0,
        ("omoi_consolidation_jobs", (("status", "pending"),)): 0.0,
        ("omoi_consolidation_jobs", (("status", "running"),)): 0.0,
    }


def test_database_gauges_count_real_rows(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    project_ids = factories.projects(6)
    factories.job(project_ids[0])
    factories.job(project_ids[1])
    factories.job(project_ids[2], status=JobStatus.RUNNING, started_at=T0)
    factories.job(project_ids[3], status=JobStatus.COMPLETED)
    factories.job(project_ids[4], status=JobStatus.FAILED)
    factories.job(project_ids[5], status=JobStatus.TIMED_OUT)
    queue = TaskQueueService(clock=clock, max_attempts=1)
    with db.transaction() as session:
        # History: one task done, one dead. Neither is in the depth.
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=[("done", None)])
        (done,) = queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w")
        assert queue.complete(session=session, task=done, worker_id="w")
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=[("dead", None)])
        (dead,) = queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w")
        queue.fail(session=session, task=dead, worker_id="w", error="boom")
        # Three consolidation tasks, one of them claimed; one task of another type.
        queue.enqueue(
            session=session,
            task_type=CONSOLIDATION_TASK,
            tasks=[("a", None), ("b", None), ("c", None)],
        )
        assert len(queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w"))
        queue.enqueue(session=session, task_type="reindex", tasks=[("x", None)])

    registry = _gauges_registry(DatabaseGauges(db, queue))

    assert _samples(registry) == {
        ("omoi_database_up", ()): 1.0,
        ("omoi_consolidation_jobs", (("status", "pending"),)): 2.0,
        ("omoi_consolidation_jobs", (("status", "running"),)): 1.0,
        ("omoi_task_queue_depth", (("state", "queued"), ("task_type", "consolidation"))): 2.0,
        ("omoi_task_queue_depth", (("state", "claimed"), ("task_type", "consolidation"))): 1.0,
        ("omoi_task_queue_depth", (("state", "queued"), ("task_type", "reindex"))): 1.0,
    }
    depth = {"task_type": "consolidation", "state": "queued"}
    assert registry.get_sample_value("omoi_task_queue_depth", depth) == 2.0


def test_oldest_claimable_wait_counts_only_tasks_a_worker_could_take_now(
    db: DatabaseService, clock: FakeClock
) -> None:
    queue = TaskQueueService(clock=clock)
    registry = _gauges_registry(DatabaseGauges(db, queue, clock=clock))
    wait = "omoi_consolidation_oldest_claimable_seconds"
    empty = registry.get_sample_value(wait)
    with db.transaction() as session:
        # Taken by a worker: no longer waiting, however old.
        old = [("claimed", T0 - timedelta(hours=2))]
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=old)
        assert queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w")
        waiting = [("waiting", T0 - timedelta(seconds=90)), ("newer", T0 - timedelta(seconds=5))]
        later = [("not yet claimable", T0 + timedelta(minutes=10))]
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=waiting + later)
        other_type = [("other", T0 - timedelta(days=1))]
        queue.enqueue(session=session, task_type="reindex", tasks=other_type)

    first = registry.get_sample_value(wait)
    clock.advance(timedelta(seconds=30))
    later_on = registry.get_sample_value(wait)

    assert (empty, first, later_on) == (0.0, 90.0, 120.0)


@contextmanager
def _closed_port() -> Iterator[int]:
    """A local port that is bound but never listens: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def unreachable_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseService]:
    """A database handle whose database cannot be reached: a PostgreSQL port nothing
    listens on, or a SQLite file opened read-only in a directory that does not exist."""
    if request.param == "sqlite":
        missing = tmp_path / "no-such-dir" / "omoi.db"
        service = DatabaseService(f"sqlite:///file:{missing}?mode=ro&uri=true")
        yield service
        service.dispose()
        assert not missing.parent.exists()
        return
    with _closed_port() as port:
        service = DatabaseService(f"postgresql+psycopg://postgres@127.0.0.1:{port}/omoi")
        yield service
        service.dispose()


def test_gauges_report_the_database_down_and_do_not_raise(
    unreachable_db: DatabaseService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="omoi_os.metrics")
    registry = _gauges_registry(DatabaseGauges(unreachable_db, TaskQueueService()))

    first = _samples(registry)
    second = _samples(registry)

    assert first == second == {("omoi_database_up", ()): 0.0}
    assert registry.get_sample_value("omoi_consolidation_jobs", {"status": "pending"}) is None
    logged = records(caplog, "metrics_database_unavailable")
    assert len(logged) == 3  # one for each scrape
    assert {(r.levelno, r.getMessage()) for r in logged} == {
        (logging.WARNING, "metrics: database unavailable: OperationalError")
    }


# --- a host's registry ---------------------------------------------------------------------


class _CountingGauges(DatabaseGauges):
    """The real gauges, counting how often they were scraped."""

    def __init__(self, db: DatabaseService, queue: TaskQueueService) -> None:
        super().__init__(db, queue)
        self.scrapes = 0

    def collect(self) -> Iterable[Metric]:
        self.scrapes += 1
        return super().collect()


@pytest.mark.parametrize("auto_describe", [False, True], ids=["plain", "auto_describe"])
def test_collector_registers_in_a_host_registry_without_querying(
    db: DatabaseService, factories: Factories, auto_describe: bool
) -> None:
    metrics = ConsolidationMetrics()
    gauges = _CountingGauges(db, TaskQueueService())
    metrics.watch(gauges)
    host = CollectorRegistry(auto_describe=auto_describe)
    host_requests = Counter("host_requests", "The host's own counter", registry=host)

    host.register(metrics.collector())

    assert gauges.scrapes == 0
    factories.job(factories.project().id)
    metrics.count_trigger(TriggerType.MANUAL, TriggerOutcome.CREATED)
    metrics.jobs_finished.labels("completed").inc(2)
    host_requests.inc()

    samples = _samples(
        host,
        [
            *GAUGES,
            "omoi_consolidation_triggers",
            "omoi_consolidation_jobs_finished",
            "host_requests",
        ],
    )

    assert gauges.scrapes == 1
    assert samples == {
        ("omoi_database_up", ()): 1.0,
        ("omoi_consolidation_jobs", (("status", "pending"),)): 1.0,
        ("omoi_consolidation_jobs", (("status", "running"),)): 0.0,
        (
            "omoi_consolidation_triggers_total",
            (("outcome", "created"), ("trigger_type", "manual")),
        ): 1.0,
        ("omoi_consolidation_jobs_finished_total", (("status", "completed"),)): 2.0,
        ("host_requests_total", ()): 1.0,
    }
    exposition = generate_latest(host).decode()
    assert "omoi_consolidation_tick_fanout_seconds_bucket" in exposition
    assert "omoi_consolidation_threshold_check_seconds_count 0.0" in exposition


def test_collector_of_a_database_down_at_registration(
    unreachable_db: DatabaseService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="omoi_os.metrics")
    metrics = ConsolidationMetrics()
    metrics.watch(DatabaseGauges(unreachable_db, TaskQueueService()))
    host = CollectorRegistry(auto_describe=True)

    host.register(metrics.collector())

    assert records(caplog, "metrics_database_unavailable") == []  # not queried yet
    assert _samples(host) == {("omoi_database_up", ()): 0.0}
    logged = one(caplog, "metrics_database_unavailable")
    assert logged.getMessage() == "metrics: database unavailable: OperationalError"
