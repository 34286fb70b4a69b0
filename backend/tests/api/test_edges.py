"""The HTTP edges: HEAD wherever GET is (load balancers probe with it), OPTIONS says
what is allowed, a body that is not JSON is 415, a one-value query parameter given
twice is 422, and the body limit agrees with the field limits: a schema-valid body,
however it is escaped, is never refused for its size."""

from __future__ import annotations

import json
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient

from omoi_os.api import create_app
from omoi_os.api.body_limit import MAX_BODY_BYTES
from omoi_os.config import AppSettings
from tests.support.api import AUTH, TOKEN, create_project
from tests.support.factories import Factories
from tests.support.rows import row_counts


def test_head_is_served_wherever_get_is(client: TestClient) -> None:
    project = create_project(client)

    health = client.head("/healthz")
    read = client.head(f"/api/v1/projects/{project['id']}", headers=AUTH)
    unauthenticated = client.head(f"/api/v1/projects/{project['id']}")
    not_a_get = client.head(f"/api/v1/projects/{project['id']}/pause")  # PUT and DELETE only

    assert (health.status_code, health.content) == (200, b"")
    assert (read.status_code, read.content) == (200, b"")
    assert unauthenticated.status_code == 401
    assert not_a_get.status_code == 405
    assert not_a_get.headers["Allow"] == "DELETE, PUT, OPTIONS"


def test_options_answers_what_is_allowed(client: TestClient) -> None:
    project = create_project(client)

    health = client.options("/healthz")
    jobs = client.options(f"/api/v1/projects/{project['id']}/consolidation-jobs")
    # Written by a project's route, read by the memories' (two routers, one path).
    memories = client.options(f"/api/v1/projects/{project['id']}/memories")

    assert (health.status_code, health.headers["Allow"]) == (204, "GET, HEAD, OPTIONS")
    assert (jobs.status_code, jobs.headers["Allow"]) == (204, "GET, HEAD, POST, OPTIONS")
    assert (memories.status_code, memories.headers["Allow"]) == (204, "GET, HEAD, POST, OPTIONS")


def test_a_body_that_is_not_json_is_415_and_writes_nothing(
    client: TestClient, factories: Factories
) -> None:
    before = row_counts(factories)

    answer = client.post(
        "/api/v1/projects",
        content=b"name=demo",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    json_suffix = client.post(
        "/api/v1/projects",
        content=json.dumps({"name": "vendor json"}).encode(),
        headers={**AUTH, "Content-Type": "application/vnd.omoi+json; charset=utf-8"},
    )

    assert (answer.status_code, answer.json()) == (
        415,
        {"detail": "the body must be JSON (Content-Type: application/json)"},
    )
    assert json_suffix.status_code == 201
    assert row_counts(factories)[0] == before[0] + 1  # the JSON one only


def test_a_one_value_query_parameter_given_twice_is_422(client: TestClient) -> None:
    project = create_project(client)

    answer = client.get(
        f"/api/v1/projects/{project['id']}/consolidation-jobs?status=pending&status=running",
        headers=AUTH,
    )

    assert answer.status_code == 422
    assert answer.json() == {
        "detail": [{"type": "repeated", "loc": ["query", "status"], "msg": "given more than once"}]
    }


def test_the_largest_valid_memory_fits_the_body_limit_however_it_is_escaped(
    client: TestClient, factories: Factories
) -> None:
    project = create_project(client)
    url = f"/api/v1/projects/{project['id']}/memories"
    headers = {**AUTH, "Content-Type": "application/json"}
    # 20,000 characters (the field's limit), each sent as the longest JSON escape.
    widest = {"memory_type": "error_fix", "execution_summary": "😀" * 20_000}
    accented = {"memory_type": "error_fix", "execution_summary": "é" * 11_000}

    widest_body = json.dumps(widest, ensure_ascii=True).encode()
    answers = [
        client.post(url, content=body, headers=headers)
        for body in (widest_body, json.dumps(accented, ensure_ascii=True).encode())
    ]

    assert len(widest_body) > 200_000  # what the old 64 KiB limit refused
    assert [a.status_code for a in answers] == [201, 201]
    assert row_counts(factories)[1] == 2
    too_long = {"memory_type": "error_fix", "execution_summary": "x" * 20_001}
    refused = client.post(url, json=too_long, headers=AUTH)
    assert refused.status_code == 422  # the field's limit, named, not the body's
    assert refused.json()["detail"][0]["loc"] == ["body", "execution_summary"]


def test_a_body_over_the_limit_is_413(client: TestClient, factories: Factories) -> None:
    project = create_project(client)
    oversized = {"memory_type": "error_fix", "execution_summary": " " * MAX_BODY_BYTES}

    answer = client.post(f"/api/v1/projects/{project['id']}/memories", json=oversized, headers=AUTH)

    assert (answer.status_code, answer.json()) == (
        413,
        {"detail": f"request body larger than {MAX_BODY_BYTES} bytes"},
    )
    assert row_counts(factories)[1] == 0


def test_health_never_waits_behind_sqlite_s_writer(
    migrated_sqlite_template: Path, tmp_path: Path
) -> None:
    """SQLite only: it has one writer, and a probe that queued behind it would wait the
    30 s busy timeout (PostgreSQL readers never wait for writers)."""
    database = tmp_path / "held.db"
    shutil.copy(migrated_sqlite_template, database)
    settings = AppSettings(
        database_url=f"sqlite:///{database}", api_tokens=f"alice:{TOKEN}", worker_enabled=False
    )
    holder = sqlite3.connect(database, isolation_level=None)
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
        holder.execute("BEGIN IMMEDIATE")  # a batch, a backup or an admin shell: the lock
        try:
            probe = pool.submit(client.get, "/healthz")
            answer = probe.result(timeout=5)  # waiting for the lock would take 30 s
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "database": "ok",
        "scheduler": "running",
        "queue": "ok",
        "oldest_claimable_seconds": 0.0,
        "clock": "ok",
        "clock_skew_seconds": None,
    }
