"""The worked example of embedding (examples/host_app.py), run as a host would run it,
on both databases: our scheduler runs inside the host's lifespan and is stopped after
it; our routes answer under the host's prefix with the host's authentication and the
host's principal; the host's own routes and error format are untouched; the host's
memory route runs our threshold check; the host's OpenAPI schema has our operations.
Also the lifespan's edges: the host's start-up failing after ours began, the host's
lifespan cancelled, and a schema that is not current."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from omoi_os import AppSettings, ConsolidationRuntime, SchemaNotCurrent, migrations, testing
from omoi_os.models import ConsolidationJob, TaskMemory
from tests.support.polling import wait_for
from tests.support.threads import scheduler_threads

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "host_app.py"
ALICE = {"X-Api-Key": "key-of-alice-0123456789"}


def _async_url(url: str) -> str:
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg_async"}
    return parsed.set(drivername=driver[parsed.get_backend_name()]).render_as_string(
        hide_password=False
    )


def _import_example(url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("HOST_DATABASE_URL", _async_url(url))
    spec = importlib.util.spec_from_file_location("host_app_under_test", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def host(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example host app, imported fresh on the test database."""
    module = _import_example(database_url, monkeypatch)
    yield module
    module.consolidation.close()
    # The host's own table, made by its lifespan: gone, as the host's own downgrade would.
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS lessons"))
    engine.dispose()


def test_the_scheduler_runs_while_the_host_app_runs(host: ModuleType) -> None:
    with TestClient(host.app) as client:
        assert host.consolidation.running
        assert host.consolidation.worker.running
        assert client.get("/memory/healthz").json()["scheduler"] == "running"
        assert client.get("/whoami", headers=ALICE).json() == {
            "user": "alice",
            "started_by": "host lifespan",
        }

    assert not host.consolidation.running
    assert not host.consolidation.worker.running
    wait_for(lambda: scheduler_threads() == [], what="APScheduler's threads gone")


def test_our_routes_under_the_host_prefix_with_the_host_principal(host: ModuleType) -> None:
    with TestClient(host.app) as client:
        host.consolidation.worker.stop()  # the first job stays pending: the second conflicts
        refused = client.post("/memory/projects", json={"name": "p"})
        project = client.post("/memory/projects", json={"name": "p"}, headers=ALICE)
        project_id = project.json()["id"]
        job = client.post(f"/memory/projects/{project_id}/consolidation-jobs", headers=ALICE)
        again = client.post(f"/memory/projects/{project_id}/consolidation-jobs", headers=ALICE)
        ours_invalid = client.post("/memory/projects", json={}, headers=ALICE)
        hosts_invalid = client.post("/workspaces/w/lessons", json={}, headers=ALICE)
        no_memory_writes = client.post(
            f"/memory/projects/{project_id}/memories",
            json={"memory_type": "learning", "execution_summary": "x"},
            headers=ALICE,
        )

    assert (refused.status_code, refused.json()) == (403, {"detail": "unknown API key"})
    assert project.status_code == 201
    assert (job.status_code, job.json()["triggered_by"]) == (202, "alice")
    assert (again.status_code, again.json()["active_job_id"]) == (409, job.json()["id"])
    # Our 422 names the field; the host's own routes keep the host's own format.
    assert ours_invalid.status_code == 422
    assert [tuple(e["loc"]) for e in ours_invalid.json()["detail"]] == [("body", "name")]
    assert (hosts_invalid.status_code, hosts_invalid.json()) == (
        400,
        {"error": "invalid request", "fields": 1},
    )
    # memory_writes=False: only the listing is at that path.
    assert no_memory_writes.status_code == 405


def _write_lessons_and_wait(client: TestClient, workspace: str) -> list[dict[str, Any]]:
    answers = [
        client.post(f"/workspaces/{workspace}/lessons", json={"summary": f"s{n}"}, headers=ALICE)
        for n in range(10)
    ]
    assert [a.status_code for a in answers] == [201] * 10
    job_id = answers[-1].json()["consolidation_job_id"]
    assert job_id is not None
    wait_for(
        lambda: (
            client.get(f"/memory/consolidation-jobs/{job_id}", headers=ALICE).json()["status"]
            == "completed"
        ),
        what="the threshold job completed by our worker inside the host",
    )
    return [a.json() for a in answers]


def _the_hosts_lesson_route_end_to_end(host: ModuleType) -> None:
    with TestClient(host.app) as client:
        answers = _write_lessons_and_wait(client, "agents")
        project_id = answers[0]["project_id"]
        hot = client.get("/workspaces/agents/hot", headers=ALICE)
        ours = client.get(
            f"/memory/projects/{project_id}/memories?tier=hot&order=score", headers=ALICE
        )
        keyed = client.get("/memory/projects?external_key=agents", headers=ALICE)

    assert [a["consolidation_job_id"] for a in answers[:9]] == [None] * 9
    assert {a["project_id"] for a in answers} == {project_id}
    assert {a["threshold_check_failed"] for a in answers} == {False}
    assert ours.status_code == 200 and hot.status_code == 200
    listed = ours.json()["items"]
    assert listed and {item["tier"] for item in listed} == {"hot"}
    assert [item["metadata"]["lesson_id"] for item in listed] == [
        lesson["lesson_id"] for lesson in hot.json()
    ]
    scores = [item["score"] for item in listed]
    assert scores == sorted(scores, reverse=True)
    assert {item["metadata"]["lesson_id"] for item in listed} <= {a["lesson_id"] for a in answers}
    assert [p["id"] for p in keyed.json()["items"]] == [project_id]
    assert keyed.json()["items"][0]["external_key"] == "agents"


def test_the_hosts_lesson_route_writes_ours_in_its_transaction(host: ModuleType) -> None:
    _the_hosts_lesson_route_end_to_end(host)


@pytest.mark.postgres_only
def test_the_example_beside_a_hosts_own_projects_in_a_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.conftest import require_postgres

    require_postgres()
    with testing.scratch_database("omoi_host_example", migrate=False) as url:
        engine = create_engine(url)
        with engine.begin() as connection:
            for table in ("projects", "task_memories", "consolidation_jobs", "task_queue"):
                connection.execute(text(f"CREATE TABLE {table} (ref INTEGER)"))
                connection.execute(text(f"INSERT INTO {table} VALUES (7)"))
        migrations.upgrade(url, schema="omoi")
        monkeypatch.setenv("OMOI_DATABASE_SCHEMA", "omoi")
        host = _import_example(url, monkeypatch)
        try:
            _the_hosts_lesson_route_end_to_end(host)
        finally:
            host.consolidation.close()
        with engine.connect() as connection:
            for table in ("projects", "task_memories", "consolidation_jobs", "task_queue"):
                rows = connection.execute(text(f"SELECT ref FROM public.{table}")).all()
                assert [tuple(row) for row in rows] == [(7,)], table
            ours = connection.execute(text("SELECT count(*) FROM omoi.task_memories"))
            assert ours.scalar_one() == 10
        engine.dispose()


def test_a_failing_check_never_loses_the_hosts_memory(
    host: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(project_id: Any) -> int | None:
        raise RuntimeError("the database hiccuped")

    monkeypatch.setattr(host.consolidation.triggers, "check_threshold_triggers_sync", broken)
    with TestClient(host.app) as client:
        answer = client.post("/workspaces/w/lessons", json={"summary": "s"}, headers=ALICE)

    assert answer.status_code == 201
    assert answer.json()["threshold_check_failed"] is True
    with host.consolidation.db.read() as session:
        memory_ids = list(session.scalars(select(TaskMemory.id)))
    assert memory_ids == [answer.json()["memory_id"]]


def test_the_hosts_openapi_schema_has_our_operations(host: ModuleType) -> None:
    paths = TestClient(host.app).get("/openapi.json").json()["paths"]

    assert "/workspaces/{workspace}/lessons" in paths
    assert "/memory/projects/{project_id}/consolidation-jobs" in paths
    assert set(paths["/memory/projects/{project_id}/consolidation-jobs"]) == {"get", "post"}
    assert set(paths["/memory/projects/{project_id}/memories"]) == {"get"}  # no writes
    assert "/memory/healthz" in paths


# --- the lifespan's edges ---------------------------------------------------------------


def _runtime(database_url: str) -> ConsolidationRuntime:
    return ConsolidationRuntime(AppSettings(database_url=database_url, worker_poll_interval=0.05))


def test_a_host_start_up_that_fails_after_ours_began_stops_ours(database_url: str) -> None:
    runtime = _runtime(database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        async with runtime.lifespan():
            raise RuntimeError("the host's cache is down")
        yield  # pragma: no cover

    with pytest.raises(RuntimeError, match="cache is down"), TestClient(FastAPI(lifespan=lifespan)):
        pass

    assert not runtime.running
    assert not runtime.worker.running
    runtime.db.dispose()


def test_a_cancelled_host_lifespan_still_stops_ours(database_url: str) -> None:
    runtime = _runtime(database_url)

    async def host_lifespan(started: asyncio.Event) -> None:
        async with runtime.lifespan():
            started.set()
            await asyncio.Event().wait()  # the host runs until cancelled

    async def scenario() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(host_lifespan(started))
        await started.wait()
        assert runtime.running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())

    assert not runtime.running
    assert not runtime.worker.running
    runtime.db.dispose()


def test_starting_twice_and_stopping_unstarted_are_harmless(database_url: str) -> None:
    runtime = _runtime(database_url)
    runtime.stop()

    async def twice() -> None:
        async with runtime.lifespan(), runtime.lifespan():
            assert runtime.running

    asyncio.run(twice())
    runtime.stop()
    assert not runtime.running
    runtime.db.dispose()


@pytest.mark.postgres_only
def test_a_schema_that_is_not_current_is_one_clear_error() -> None:
    with testing.scratch_database("omoi_unmigrated", migrate=False) as url:
        runtime = _runtime(url)
        with pytest.raises(SchemaNotCurrent, match=r"never been migrated.*omoi-os migrate"):
            asyncio.run(_enter(runtime))
        assert not runtime.running
        runtime.db.dispose()


async def _enter(runtime: ConsolidationRuntime) -> None:
    async with runtime.lifespan():
        pass


def test_two_runtimes_in_one_process_share_nothing(database_url: str) -> None:
    first, second = _runtime(database_url), _runtime(database_url)
    project = first.projects.create_sync("p")
    first.triggers.trigger_consolidation_sync(project.id)

    assert first.metrics.registry is not second.metrics.registry
    assert (
        first.metrics.registry.get_sample_value(
            "omoi_consolidation_triggers_total", {"trigger_type": "manual", "outcome": "created"}
        )
        == 1
    )
    assert (
        second.metrics.registry.get_sample_value(
            "omoi_consolidation_triggers_total", {"trigger_type": "manual", "outcome": "created"}
        )
        is None
    )
    assert first.queue is not second.queue
    with first.db.read() as session:
        assert len(session.scalars(select(ConsolidationJob)).all()) == 1
    first.db.dispose()
    second.db.dispose()
