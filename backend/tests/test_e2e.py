"""End to end: a real `omoi-os serve` process on a free port, driven over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect

from omoi_os import testing
from omoi_os.api.body_limit import MAX_BODY_BYTES
from omoi_os.services.database import DatabaseService
from tests.conftest import require_postgres
from tests.support.factories import Factories
from tests.support.polling import wait_for
from tests.support.rows import row_counts
from tests.support.servers import Server, cli_env, run_cli, serve

ALICE = "alice-e2e-token-0123456789"


def _server_env(database_url: str, home: Path, **settings: str) -> dict[str, str]:
    return cli_env(
        home,
        database_url=database_url,
        api_tokens=f"alice:{ALICE}",
        consolidation_threshold="10",
        worker_poll_interval="0.1",
        **settings,
    )


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """A server with its worker: jobs run as soon as they are queued."""
    with serve(_server_env(database_url, tmp_path)) as running:
        yield running


@pytest.fixture
def idle_server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """A server without a worker: jobs stay pending, so conflicts are reproducible."""
    with serve(_server_env(database_url, tmp_path, worker_enabled="false")) as running:
        yield running


def _client(server: Server) -> httpx.Client:
    headers = {"Authorization": f"Bearer {ALICE}"}
    return httpx.Client(base_url=f"{server.base_url}/api/v1", headers=headers, timeout=10)


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with _client(server) as client:
        yield client


@pytest.fixture
def idle_api(idle_server: Server) -> Iterator[httpx.Client]:
    with _client(idle_server) as client:
        yield client


def _wait_for_status(api: httpx.Client, job_id: int, status: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(api.get(f"/consolidation-jobs/{job_id}").json())
        return bool(seen["status"] == status)

    wait_for(reached, timeout=60, what=f"job {job_id} to become {status} ({seen})")
    return seen


def test_walkthrough(api: httpx.Client) -> None:
    """The README's five minutes: a project, memories until the threshold starts a job,
    the worker running it, a manual trigger, and reading the jobs back."""
    project = api.post("/projects", json={"name": "checkout-service"}).json()
    memory = {"memory_type": "error_fix", "execution_summary": "retry the upload"}
    started = [
        api.post(f"/projects/{project['id']}/memories", json=memory).json() for _ in range(10)
    ]
    threshold_job = started[-1]["consolidation_job_id"]

    done = _wait_for_status(api, threshold_job, "completed")
    manual = api.post(
        f"/projects/{project['id']}/consolidation-jobs",
        json={"scope": {"unconsolidated_only": False, "dry_run": True}},
    )
    rescored = _wait_for_status(api, manual.json()["id"], "completed")
    listed = api.get(f"/projects/{project['id']}/consolidation-jobs")

    assert [answer["consolidation_job_id"] for answer in started[:9]] == [None] * 9
    assert isinstance(threshold_job, int)
    assert done["trigger_type"] == "threshold"
    assert (done["result"]["memories_processed"], done["result"]["memories_consolidated"]) == (
        10,
        10,
    )
    assert done["result"]["tiers"] == {"hot": 10, "warm": 0, "cold": 0}
    assert manual.status_code == 202
    assert manual.json()["triggered_by"] == "alice"
    assert (rescored["result"]["memories_processed"], rescored["result"]["dry_run"]) == (10, True)
    assert rescored["result"]["memories_consolidated"] == 0
    assert [job["id"] for job in listed.json()["items"]] == [manual.json()["id"], threshold_job]


def test_every_error_status_with_its_detail_and_no_rows_written(
    idle_server: Server, idle_api: httpx.Client, db: DatabaseService
) -> None:
    server, api = idle_server, idle_api
    project = api.post("/projects", json={"name": "p"}).json()
    dormant = api.post("/projects", json={"name": "q", "is_active": False}).json()
    active = api.post(f"/projects/{project['id']}/consolidation-jobs").json()
    before = row_counts(Factories(db))
    url = f"{server.base_url}/api/v1/projects"

    def status_and_detail(response: httpx.Response) -> tuple[int, Any]:
        return response.status_code, response.json()["detail"]

    unauthenticated = [
        httpx.post(url, json={"name": "x"}),
        httpx.post(url, json={"name": "x"}, headers={"Authorization": "Bearer nope-0123456789abc"}),
        httpx.post(url, json={"name": "x"}, headers={"Authorization": f"Bearer {ALICE[:-1]}!"}),
        httpx.post(url, json={"name": "x"}, params={"access_token": ALICE}),
    ]
    missing_token = "missing bearer token (Authorization: Bearer <token>)"
    assert [status_and_detail(r) for r in unauthenticated] == [
        (401, missing_token),
        (401, "invalid bearer token"),
        (401, "invalid bearer token"),
        (401, missing_token),
    ]
    assert [r.headers["www-authenticate"] for r in unauthenticated] == [
        'Bearer realm="omoi-os"'
    ] * 4

    missing = "00000000-0000-4000-8000-000000000000"
    assert status_and_detail(api.get(f"/projects/{missing}")) == (
        404,
        f"project {missing} does not exist",
    )
    assert status_and_detail(api.get("/consolidation-jobs/987654")) == (
        404,
        "consolidation job 987654 does not exist",
    )
    assert status_and_detail(api.post(f"/projects/{dormant['id']}/consolidation-jobs")) == (
        409,
        f"project {dormant['id']} is inactive",
    )
    conflict = api.post(f"/projects/{project['id']}/consolidation-jobs", json={})
    assert (conflict.status_code, conflict.json()) == (
        409,
        {
            "detail": f"project {project['id']} already has active consolidation job "
            f"{active['id']}",
            "active_job_id": active["id"],
        },
    )

    bad_scope = api.post(
        f"/projects/{project['id']}/consolidation-jobs",
        json={"scope": {"memory_types": ["rumour"]}},
    )
    bad_id = api.get("/projects/123")
    unknown_field = api.post("/projects", json={"name": "x", "colour": "red"})
    assert (bad_scope.status_code, bad_scope.json()["detail"][0]["loc"]) == (
        422,
        ["body", "scope", "memory_types", 0],
    )
    assert (bad_id.status_code, bad_id.json()["detail"][0]["loc"]) == (422, ["path", "project_id"])
    assert (unknown_field.status_code, unknown_field.json()["detail"][0]["loc"]) == (
        422,
        ["body", "colour"],
    )

    too_big = api.post(
        f"/projects/{project['id']}/memories",
        json={"memory_type": "learning", "execution_summary": "x" * MAX_BODY_BYTES},
    )
    assert status_and_detail(too_big) == (413, "request body larger than 262144 bytes")
    not_json = api.post(
        "/projects",
        content=b"name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status_and_detail(not_json) == (
        415,
        "the body must be JSON (Content-Type: application/json)",
    )

    assert before == (2, 0, 1, 1)
    assert row_counts(Factories(db)) == before


def test_serve_without_tokens_prints_one_that_works(database_url: str, tmp_path: Path) -> None:
    with serve(cli_env(tmp_path, database_url=database_url)) as server:
        server.wait_for_output("Set OMOI_API_TOKENS")
        banner = server.output().splitlines()
        start = next(n for n, line in enumerate(banner) if "generated a token" in line)
        banner = banner[start : start + 4]
        token = banner[1].strip()
        with_token = httpx.get(
            f"{server.base_url}/api/v1/consolidation/schedule",
            headers={"Authorization": f"Bearer {token}"},
        )
        without = httpx.get(f"{server.base_url}/api/v1/consolidation/schedule")

    assert "generated a token for this run" in banner[0]
    assert f"curl -H 'Authorization: Bearer {token}'" in banner[3]
    assert len(token) >= 32
    assert (with_token.status_code, without.status_code) == (200, 401)


def test_the_access_log_shows_no_query_string_value(api: httpx.Client, server: Server) -> None:
    """A client that puts its token in the URL does not get it written to the log."""
    api.get("/projects", params={"token": "SECRET-in-the-url", "limit": "5"})

    server.wait_for_output("/api/v1/projects?token=***&limit=***")
    assert "SECRET-in-the-url" not in server.output()


@pytest.mark.postgres_only
def test_serve_refuses_an_unmigrated_postgres(tmp_path: Path) -> None:
    require_postgres()
    with testing.scratch_database("omoi_unmigrated", migrate=False) as url:
        result = run_cli("serve", "--port", "1", env=cli_env(tmp_path, database_url=url))
        db = DatabaseService(url)
        try:
            tables = inspect(db.engine).get_table_names()
        finally:
            db.dispose()

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("omoi-os: error: the database ")
    assert "has never been migrated" in result.stderr
    assert "Run `omoi-os migrate`" in result.stderr
    assert result.stdout == ""
    assert tables == []  # serve migrates only the embedded SQLite database itself
