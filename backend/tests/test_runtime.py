"""ConsolidationRuntime, the composition root: building it does no I/O, its parts share
one database handle and one task queue, start() refuses a database that is not
migrated, start and stop are idempotent, and a host's own Engine stays the host's."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, select
from sqlalchemy.exc import OperationalError

import omoi_os.runtime as runtime_module
from omoi_os import migrations
from omoi_os.config import AppSettings
from omoi_os.models import Project
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.services.consolidation.sweeper import Sweeper
from omoi_os.services.database import DatabaseService
from omoi_os.services.gauges import DatabaseGauges
from omoi_os.services.task_queue import TaskQueueService
from tests.support.clocks import FakeClock

WORKER_THREAD = "consolidation-worker-"
MakeRuntime = Callable[..., ConsolidationRuntime]


class _WorkerThreads:
    """The worker threads started since this was made (other tests' are not counted)."""

    def __init__(self) -> None:
        self._before = set(threading.enumerate())

    def alive(self) -> list[str]:
        return sorted(
            thread.name
            for thread in threading.enumerate()
            if thread not in self._before and thread.name.startswith(WORKER_THREAD)
        )


@pytest.fixture
def make_runtime(clock: FakeClock) -> Iterator[MakeRuntime]:
    """Runtimes on the fake clock (its last tick is long past the misfire grace, so
    the start-up catch-up runs no tick); every one is closed after the test."""
    built: list[ConsolidationRuntime] = []

    def make(
        database_url: str, *, engine: Engine | None = None, **settings: Any
    ) -> ConsolidationRuntime:
        values: dict[str, Any] = {"database_url": database_url, "worker_poll_interval": 0.05}
        runtime = ConsolidationRuntime(
            AppSettings(**(values | settings)), engine=engine, clock=clock
        )
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


# --- building does no I/O ------------------------------------------------------------------


def test_building_a_runtime_does_no_io(tmp_path: Path, make_runtime: MakeRuntime) -> None:
    database = tmp_path / "not-yet" / "omoi.db"

    runtime = make_runtime(f"sqlite:///{database}")

    assert not database.parent.exists()
    assert runtime.running is False
    runtime.stop()  # stopping what never started does no I/O either
    assert not database.parent.exists()
    with pytest.raises(migrations.SchemaNotCurrent):
        runtime.start()  # the first I/O: the schema check opens the database
    assert database.exists()


def test_building_a_runtime_from_the_environment_does_no_io(tmp_path: Path) -> None:
    runtime = ConsolidationRuntime()
    try:
        data_dir = tmp_path / "xdg-data" / "omoi-os"
        assert runtime.settings.data_dir == data_dir
        assert runtime.db.url == f"sqlite:///{data_dir / 'omoi_os.db'}"
        assert not data_dir.exists()
    finally:
        runtime.close()
    assert not data_dir.exists()


def test_building_a_runtime_for_an_unreachable_postgresql_connects_nowhere(
    make_runtime: MakeRuntime,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection is refused
        port = closed.getsockname()[1]
        runtime = make_runtime(f"postgresql://postgres@127.0.0.1:{port}/omoi")

        assert runtime.db.dialect == "postgresql"
        assert runtime.running is False
        with pytest.raises(OperationalError) as raised:
            runtime.start()

    assert f"port {port} failed" in str(raised.value)
    assert (runtime.running, runtime.worker.running) == (False, False)


# --- one queue, one database handle --------------------------------------------------------


def test_the_parts_share_one_task_queue_and_one_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_runtime: MakeRuntime
) -> None:
    handed: dict[str, list[tuple[DatabaseService, TaskQueueService]]] = {
        "gauges": [],
        "sweeper": [],
    }

    class RecordingGauges(DatabaseGauges):
        def __init__(self, db: DatabaseService, queue: TaskQueueService, **kwargs: Any) -> None:
            super().__init__(db, queue, **kwargs)
            handed["gauges"].append((db, queue))

    class RecordingSweeper(Sweeper):
        def __init__(self, db: DatabaseService, queue: TaskQueueService, **kwargs: Any) -> None:
            super().__init__(db, queue, **kwargs)
            handed["sweeper"].append((db, queue))

    monkeypatch.setattr(runtime_module, "DatabaseGauges", RecordingGauges)
    monkeypatch.setattr(runtime_module, "Sweeper", RecordingSweeper)

    runtime = make_runtime(f"sqlite:///{tmp_path / 'omoi.db'}", worker_lease_seconds=42)

    assert isinstance(runtime.queue, TaskQueueService)
    assert runtime.triggers.task_queue is runtime.queue
    assert runtime.worker.queue is runtime.queue
    assert handed["sweeper"] == [(runtime.db, runtime.queue)]
    assert handed["gauges"] == [(runtime.db, runtime.queue)]
    assert handed["sweeper"][0][1] is runtime.queue and handed["gauges"][0][1] is runtime.queue
    assert runtime.queue.lease.total_seconds() == 42
    assert runtime.triggers.db is runtime.db
    assert runtime.triggers.metrics is runtime.metrics


def test_the_runtime_metrics_read_its_database(
    database_url: str, make_runtime: MakeRuntime
) -> None:
    runtime = make_runtime(database_url)
    project = runtime.projects.create_sync("alpha")
    job_id = runtime.triggers.trigger_consolidation_sync(project.id)

    registry = runtime.metrics.registry

    assert registry.get_sample_value("omoi_database_up") == 1.0
    assert registry.get_sample_value("omoi_consolidation_jobs", {"status": "pending"}) == 1.0
    depth = {"task_type": "consolidation", "state": "queued"}
    assert registry.get_sample_value("omoi_task_queue_depth", depth) == 1.0
    assert runtime.jobs.get_sync(job_id).project_id == project.id


# --- start and stop ------------------------------------------------------------------------


def test_start_on_an_unmigrated_database_starts_nothing(
    empty_database_url: str, make_runtime: MakeRuntime
) -> None:
    runtime = make_runtime(empty_database_url, worker_concurrency=2)
    threads = _WorkerThreads()

    with pytest.raises(migrations.SchemaNotCurrent) as raised:
        runtime.start()

    assert "`omoi-os migrate`" in str(raised.value)
    assert "has never been migrated" in str(raised.value)
    assert (runtime.running, runtime.triggers.scheduler.running) == (False, False)
    assert (runtime.worker.running, threads.alive()) == (False, [])
    assert inspect(runtime.db.engine).get_table_names() == []  # the check wrote nothing


def test_start_and_stop_are_idempotent(database_url: str, make_runtime: MakeRuntime) -> None:
    threads = _WorkerThreads()
    runtime = make_runtime(database_url, worker_concurrency=2)
    runtime.stop()  # before start: harmless

    runtime.start()
    runtime.start()

    assert (runtime.running, runtime.triggers.scheduler.running) == (True, True)
    assert runtime.worker.running is True
    assert threads.alive() == [f"{WORKER_THREAD}0", f"{WORKER_THREAD}1"]

    runtime.stop()
    runtime.stop()

    assert (runtime.running, runtime.triggers.scheduler.running) == (False, False)
    assert (runtime.worker.running, threads.alive()) == (False, [])

    runtime.start()  # and again after a stop
    assert (runtime.running, runtime.worker.running) == (True, True)
    assert len(threads.alive()) == 2
    runtime.close()
    assert (runtime.running, runtime.worker.running, threads.alive()) == (False, False, [])


def test_start_without_the_worker(database_url: str, make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(database_url, worker_enabled=False)
    threads = _WorkerThreads()

    runtime.start()

    assert (runtime.running, runtime.worker.running, threads.alive()) == (True, False, [])
    runtime.stop()
    assert runtime.running is False


# --- a host's engine -----------------------------------------------------------------------


def test_a_runtime_on_a_hosts_engine(
    database_url: str, tmp_path: Path, make_runtime: MakeRuntime
) -> None:
    host_engine = create_engine(database_url)
    unused = tmp_path / "unused" / "omoi.db"  # the settings' URL is not the one used
    try:
        runtime = make_runtime(f"sqlite:///{unused}", engine=host_engine)

        assert runtime.db.engine is host_engine
        runtime.start()
        project = runtime.projects.create_sync("hosted")
        with host_engine.connect() as connection:
            assert connection.scalars(select(Project.id)).all() == [project.id]
        pool = host_engine.pool
        assert pool.checkedin() >= 1

        runtime.close()

        assert (runtime.running, runtime.worker.running) == (False, False)
        assert host_engine.pool is pool  # not disposed: its connections stay pooled
        assert pool.checkedin() >= 1
        with host_engine.connect() as connection:
            assert connection.scalars(select(Project.name)).all() == ["hosted"]
        assert not unused.parent.exists()
    finally:
        host_engine.dispose()


def test_a_runtime_of_its_own_disposes_its_engine(
    database_url: str, make_runtime: MakeRuntime
) -> None:
    runtime = make_runtime(database_url)
    runtime.projects.create_sync("alpha")
    pool = runtime.db.engine.pool
    assert pool.checkedin() >= 1

    runtime.close()

    assert runtime.db.engine.pool is not pool
    assert pool.checkedin() == 0
