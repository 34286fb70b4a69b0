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
from sqlalchemy import select

from omoi_os import AppSettings, ConsolidationRuntime, SchemaNotCurrent, testing
from omoi_os.models import ConsolidationJob
from tests.support.polling import wait_for
from tests.support.threads import scheduler_threads

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "host_app.py"
ALICE = {"X-Api-Key": "key-of-alice-0123456789"}


@pytest.fixture
def host(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example host app, imported fresh on the test database."""
    monkeypatch.setenv("HOST_DATABASE_URL", database_url)
    spec = importlib.util.spec_from_file_location("host_app_under_test", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.engine.dispose()


def test_the_scheduler_runs_while_the_host_app_runs(host: ModuleType) -> None:
    with TestClient(host.app) as client:
        assert host.consolidation.running
        assert host.consolidation.worker.running
        assert client.get("/consolidation/healthz").json()["scheduler"] == "running"
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
        refused = client.post("/consolidation/projects", json={"name": "p"})
        project = client.post("/consolidation/projects", json={"name": "p"}, headers=ALICE)
        project_id = project.json()["id"]
        job = client.post(f"/consolidation/projects/{project_id}/consolidation-jobs", headers=ALICE)
        again = client.post(
            f"/consolidation/projects/{project_id}/consolidation-jobs", headers=ALICE
        )
        ours_invalid = client.post(
            f"/consolidation/projects/{project_id}/memories",
            json={"memory_type": "x"},
            headers=ALICE,
        )
        hosts_invalid = client.post(f"/agents/{project_id}/lessons", json={}, headers=ALICE)

    assert (refused.status_code, refused.json()) == (403, {"detail": "unknown API key"})
    assert project.status_code == 201
    assert (job.status_code, job.json()["triggered_by"]) == (202, "alice")
    assert (again.status_code, again.json()["active_job_id"]) == (409, job.json()["id"])
    # Our 422 names the field; the host's own routes keep the host's own format.
    assert ours_invalid.status_code == 422
    assert {tuple(e["loc"]) for e in ours_invalid.json()["detail"]} == {
        ("body", "memory_type"),
        ("body", "execution_summary"),
    }
    assert (hosts_invalid.status_code, hosts_invalid.json()) == (
        400,
        {"error": "invalid request", "fields": 1},
    )


def test_the_hosts_memory_route_runs_our_threshold_check(host: ModuleType) -> None:
    with TestClient(host.app) as client:
        project_id = client.post(
            "/consolidation/projects", json={"name": "agents"}, headers=ALICE
        ).json()["id"]
        answers = [
            client.post(f"/agents/{project_id}/lessons", json={"summary": f"s{n}"}, headers=ALICE)
            for n in range(10)
        ]
        job_id = answers[-1].json()["consolidation_job_id"]
        wait_for(
            lambda: (
                client.get(f"/consolidation/consolidation-jobs/{job_id}", headers=ALICE).json()[
                    "status"
                ]
                == "completed"
            ),
            what="the threshold job completed by our worker inside the host",
        )

    assert [a.status_code for a in answers] == [201] * 10
    assert [a.json()["consolidation_job_id"] for a in answers[:9]] == [None] * 9
    assert job_id is not None
    assert {a.json()["threshold_check_failed"] for a in answers} == {False}


def test_a_failing_check_never_loses_the_hosts_memory(
    host: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(project_id: Any) -> int | None:
        raise RuntimeError("the database hiccuped")

    monkeypatch.setattr(host.consolidation.triggers, "check_threshold_triggers_sync", broken)
    with TestClient(host.app) as client:
        project_id = client.post(
            "/consolidation/projects", json={"name": "agents"}, headers=ALICE
        ).json()["id"]
        answer = client.post(f"/agents/{project_id}/lessons", json={"summary": "s"}, headers=ALICE)
        stored = client.get(f"/consolidation/projects/{project_id}", headers=ALICE)

    assert answer.status_code == 201
    assert answer.json()["threshold_check_failed"] is True
    assert stored.status_code == 200
    with host.Session() as session:
        assert session.scalar(select(host.TaskMemory.id)) == answer.json()["lesson_id"]


def test_the_hosts_openapi_schema_has_our_operations(host: ModuleType) -> None:
    paths = TestClient(host.app).get("/openapi.json").json()["paths"]

    assert "/agents/{project_id}/lessons" in paths
    assert "/consolidation/projects/{project_id}/consolidation-jobs" in paths
    assert set(paths["/consolidation/projects/{project_id}/consolidation-jobs"]) == {"get", "post"}
    assert "/consolidation/healthz" in paths


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
