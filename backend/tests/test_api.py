"""The app in process: lifespan, auth, every route's success and error answers, and
the OpenAPI schema. (test_e2e.py drives a real `omoi-os serve` process.)"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from sqlalchemy import update

from omoi_os.api import create_app
from omoi_os.api.auth import match_token
from omoi_os.config import AppSettings
from omoi_os.models import ConsolidationJob, JobStatus, Project, QueuedTask, TaskMemory
from omoi_os.services.database import DatabaseService

from .conftest import create_postgres_database, drop_postgres_database
from .factories import Factories

TOKEN = "alice-secret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(database_url: str) -> AppSettings:
    return AppSettings(
        database_url=database_url,
        api_tokens=f"alice:{TOKEN},bob:bob-secret-token-0123456789",  # type: ignore[arg-type]
        consolidation_threshold=10,
        worker_enabled=False,  # jobs stay pending, so every answer is deterministic
    )


@pytest.fixture
def client(settings: AppSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _rows(factories: Factories) -> tuple[int, int, int, int]:
    return (
        factories.count(Project),
        factories.count(TaskMemory),
        factories.count(ConsolidationJob),
        factories.count(QueuedTask),
    )


def _project(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/projects", json={"name": "demo", **body}, headers=AUTH)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _memory(client: TestClient, project_id: str) -> dict[str, Any]:
    body = {"memory_type": "error_fix", "execution_summary": "retry with backoff"}
    response = client.post(f"/api/v1/projects/{project_id}/memories", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- projects and memories -----------------------------------------------------------------


def test_project_create_read_update(client: TestClient) -> None:
    project = _project(client)

    read = client.get(f"/api/v1/projects/{project['id']}", headers=AUTH)
    patched = client.patch(
        f"/api/v1/projects/{project['id']}",
        json={"name": "renamed", "is_active": False},
        headers=AUTH,
    )

    assert (project["name"], project["is_active"]) == ("demo", True)
    assert read.json() == project
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["is_active"]) == ("renamed", False)


def test_memories_report_the_job_their_write_started(client: TestClient) -> None:
    project = _project(client)

    answers = [_memory(client, project["id"]) for _ in range(12)]

    job_ids = [answer["consolidation_job_id"] for answer in answers]
    assert job_ids[:9] == [None] * 9
    assert isinstance(job_ids[9], int)
    assert job_ids[10:] == [None, None]
    assert {answer["threshold_check_failed"] for answer in answers} == {False}
    assert answers[0]["memory"]["memory_type"] == "error_fix"
    job = client.get(f"/api/v1/consolidation-jobs/{job_ids[9]}", headers=AUTH).json()
    assert (job["trigger_type"], job["status"], job["triggered_by"]) == (
        "threshold",
        "pending",
        "threshold",
    )


# --- manual trigger and job reads ------------------------------------------------------------


def test_manual_trigger_records_the_principal_and_scope(client: TestClient) -> None:
    project = _project(client)

    response = client.post(
        f"/api/v1/projects/{project['id']}/consolidation-jobs",
        json={"scope": {"memory_types": ["decision"], "min_age_days": 3}},
        headers={"Authorization": "Bearer bob-secret-token-0123456789"},
    )

    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["trigger_type"], job["status"], job["triggered_by"]) == ("manual", "pending", "bob")
    assert job["scope"] == {
        "memory_types": ["decision"],
        "min_age_days": 3,
        "unconsolidated_only": True,
        "dry_run": False,
    }


def test_manual_trigger_without_a_body(client: TestClient) -> None:
    project = _project(client)

    response = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH)

    assert response.status_code == 202
    assert response.json()["scope"] == {"unconsolidated_only": True, "dry_run": False}


def test_job_list_is_newest_first_filtered_and_paginated(
    client: TestClient, db: DatabaseService
) -> None:
    project = _project(client)
    created = []
    for _ in range(5):
        job = client.post(
            f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH
        ).json()
        created.append(job["id"])
        with db.transaction() as session:
            session.execute(
                update(ConsolidationJob)
                .where(ConsolidationJob.id == job["id"])
                .values(status=JobStatus.COMPLETED)
            )
    url = f"/api/v1/projects/{project['id']}/consolidation-jobs"

    first = client.get(url, params={"limit": 2}, headers=AUTH).json()
    last = client.get(url, params={"limit": 2, "offset": 4}, headers=AUTH).json()
    pending = client.get(url, params={"status": "pending"}, headers=AUTH).json()

    assert [job["id"] for job in first["items"]] == created[::-1][:2]
    assert first["next_offset"] == 2
    assert ([job["id"] for job in last["items"]], last["next_offset"]) == ([created[0]], None)
    assert pending["items"] == []


def test_schedule_describes_the_configuration(client: TestClient) -> None:
    body = client.get("/api/v1/consolidation/schedule", headers=AUTH).json()

    assert body["cron"] == "0 2 * * *"
    assert body["timezone"] == "UTC"
    assert body["next_run_utc"].endswith("T02:00:00Z")
    assert (body["threshold"], body["cooldown_seconds"], body["scheduler_running"]) == (
        10,
        300,
        True,
    )


def test_health_and_metrics_need_no_token(client: TestClient) -> None:
    project = _project(client)
    for _ in range(10):
        _memory(client, project["id"])

    health = client.get("/healthz")
    metrics = client.get("/metrics")

    assert (health.status_code, health.json()) == (
        200,
        {"status": "ok", "database": "ok", "scheduler": "running"},
    )
    assert metrics.status_code == 200
    text = metrics.text
    assert 'omoi_consolidation_jobs{status="pending"} 1.0' in text
    assert 'omoi_task_queue_depth{state="queued",task_type="consolidation"} 1.0' in text
    assert "omoi_database_up 1.0" in text
    assert 'omoi_consolidation_triggers_total{outcome="created",trigger_type="threshold"}' in text
    assert "omoi_consolidation_threshold_check_seconds_count" in text


# --- errors: each status with its detail, and no rows written ---------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abc"},
        {"Authorization": f"Bearer {TOKEN[:-1]}X"},  # one byte off
        {"Authorization": f"Basic {TOKEN}"},
    ],
    ids=["missing", "wrong", "one-byte-off", "not-bearer"],
)
def test_requests_without_a_valid_token_get_401(
    client: TestClient, factories: Factories, headers: dict[str, str]
) -> None:
    response = client.post("/api/v1/projects", json={"name": "x"}, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="omoi-os"'
    assert response.json()["detail"] in {
        "missing bearer token (Authorization: Bearer <token>)",
        "invalid bearer token",
    }
    assert _rows(factories) == (0, 0, 0, 0)


def test_a_token_in_the_query_string_is_not_accepted(client: TestClient) -> None:
    response = client.get(
        "/api/v1/consolidation/schedule", params={"token": TOKEN, "access_token": TOKEN}
    )
    assert response.status_code == 401


def test_not_found_answers(client: TestClient, factories: Factories) -> None:
    missing = uuid.uuid4()
    memory = {"memory_type": "warning", "execution_summary": "x"}

    answers = [
        client.get(f"/api/v1/projects/{missing}", headers=AUTH),
        client.patch(f"/api/v1/projects/{missing}", json={"name": "x"}, headers=AUTH),
        client.post(f"/api/v1/projects/{missing}/memories", json=memory, headers=AUTH),
        client.post(f"/api/v1/projects/{missing}/consolidation-jobs", headers=AUTH),
        client.get(f"/api/v1/projects/{missing}/consolidation-jobs", headers=AUTH),
        client.get("/api/v1/consolidation-jobs/424242", headers=AUTH),
    ]

    assert [answer.status_code for answer in answers] == [404] * 6
    assert answers[0].json() == {"detail": f"project {missing} does not exist"}
    assert answers[5].json() == {"detail": "consolidation job 424242 does not exist"}
    assert _rows(factories) == (0, 0, 0, 0)


def test_conflicts_name_the_active_job_and_write_nothing(
    client: TestClient, factories: Factories
) -> None:
    project = _project(client)
    inactive = _project(client, is_active=False)
    first = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH)
    before = _rows(factories)

    again = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH)
    dormant = client.post(f"/api/v1/projects/{inactive['id']}/consolidation-jobs", headers=AUTH)

    assert again.status_code == 409
    assert again.json() == {
        "detail": f"project {project['id']} already has active consolidation job "
        f"{first.json()['id']}",
        "active_job_id": first.json()["id"],
    }
    assert dormant.status_code == 409
    assert dormant.json() == {
        "detail": f"project {inactive['id']} is inactive",
        "active_job_id": None,
    }
    assert _rows(factories) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "location"),
    [
        ("post", "/api/v1/projects", {"name": ""}, ["body", "name"]),
        ("post", "/api/v1/projects", {"name": "x", "owner": "me"}, ["body", "owner"]),
        ("patch", "/api/v1/projects/{pid}", {}, ["body"]),
        ("patch", "/api/v1/projects/{pid}", {"is_active": None}, ["body"]),
        ("post", "/api/v1/projects", {"name": "x", "is_active": 0}, ["body", "is_active"]),
        ("post", "/api/v1/projects", {"name": "nul\u0000byte"}, ["body", "name"]),
        # A JSON escape for half a surrogate pair: valid JSON, not storable text.
        ("post", "/api/v1/projects", b'{"name": "lone \\ud800 surrogate"}', ["body", "name"]),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            {
                "memory_type": "warning",
                "execution_summary": "x",
                "learned_at": "0001-01-01T00:00:00+01:00",
            },
            ["body", "learned_at"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            {
                "memory_type": "warning",
                "execution_summary": "x",
                "learned_at": "9999-12-31T23:59:00-01:00",
            },
            ["body", "learned_at"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            {"memory_type": "warning", "execution_summary": "x", "reused_count": "3"},
            ["body", "reused_count"],
        ),
        ("get", "/api/v1/projects/not-a-uuid", None, ["path", "project_id"]),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            {"memory_type": "gossip", "execution_summary": "x"},
            ["body", "memory_type"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            {"memory_type": "warning", "execution_summary": "x", "reused_count": -1},
            ["body", "reused_count"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            {"memory_type": "warning", "execution_summary": "x", "learned_at": "2026-01-01T00:00"},
            ["body", "learned_at"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/consolidation-jobs",
            {"scope": {"everything": True}},
            ["body", "scope", "everything"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/consolidation-jobs",
            {"scope": {"min_age_days": 5000}},
            ["body", "scope", "min_age_days"],
        ),
        ("get", "/api/v1/consolidation-jobs/abc", None, ["path", "job_id"]),
        ("get", "/api/v1/consolidation-jobs/0", None, ["path", "job_id"]),
        ("get", "/api/v1/consolidation-jobs/99999999999999999999", None, ["path", "job_id"]),
        (
            "get",
            "/api/v1/projects/{pid}/consolidation-jobs?status=sleeping",
            None,
            ["query", "status"],
        ),
        ("get", "/api/v1/projects/{pid}/consolidation-jobs?limit=1000", None, ["query", "limit"]),
    ],
)
def test_bad_input_gets_422_naming_the_field_and_writes_nothing(
    client: TestClient,
    factories: Factories,
    method: str,
    path: str,
    body: Any,
    location: list[str],
) -> None:
    project = _project(client)
    before = _rows(factories)

    kwargs: dict[str, Any] = {"headers": AUTH}
    if isinstance(body, bytes):
        kwargs |= {"content": body, "headers": AUTH | {"Content-Type": "application/json"}}
    elif body is not None:
        kwargs["json"] = body
    response = client.request(method, path.format(pid=project["id"]), **kwargs)

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == location
    assert _rows(factories) == before


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.options(f"/api/v1/projects/{uuid.uuid4()}", headers=AUTH)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, PATCH"


def test_bodies_over_64_kib_get_413_and_write_nothing(
    client: TestClient, factories: Factories
) -> None:
    project = _project(client)
    before = _rows(factories)
    huge = {"memory_type": "learning", "execution_summary": "x" * (64 * 1024)}

    declared = client.post(f"/api/v1/projects/{project['id']}/memories", json=huge, headers=AUTH)
    streamed = client.post(
        f"/api/v1/projects/{project['id']}/memories",
        content=iter([b'{"memory_type": "learning", "execution_summary": "', b"x" * 70_000, b'"}']),
        headers=AUTH | {"Content-Type": "application/json"},
    )

    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert declared.json() == {"detail": "request body larger than 65536 bytes"}
    assert _rows(factories) == before


# --- lifespan and schema -----------------------------------------------------------------


def _scheduler_threads() -> list[threading.Thread]:
    prefixes = ("APScheduler", "consolidation", "task-queue-listener")
    return [t for t in threading.enumerate() if t.name.startswith(prefixes)]


def test_lifespan_starts_and_stops_everything(settings: AppSettings, database_url: str) -> None:
    app = create_app(settings.model_copy(update={"worker_enabled": True}))
    with TestClient(app) as test_client:
        assert test_client.get("/healthz").status_code == 200
        services = app.state.services
        assert services.triggers.running
        assert services.worker.running

    assert not services.triggers.running
    assert not services.worker.running
    assert services.db.engine.pool.checkedout() == 0
    for thread in _scheduler_threads():
        thread.join(timeout=5)
    assert _scheduler_threads() == []
    if database_url.startswith("postgresql"):
        assert _connections_of(database_url) == 0


def _connections_of(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = "
            "'omoi-os'",
            (name,),
        ).fetchone()
    return int(row[0]) if row else -1


@pytest.mark.postgres_only
def test_startup_on_an_unmigrated_postgres_fails_with_the_fix() -> None:
    url = create_postgres_database("omoi_unmigrated")
    try:
        app = create_app(AppSettings(database_url=url))
        with (
            pytest.raises(RuntimeError, match=r"never been migrated.*omoi-os migrate"),
            TestClient(app),
        ):
            pass
        assert not app.state.services.triggers.running
        assert _scheduler_threads() == []
    finally:
        drop_postgres_database(url)


def test_openapi_schema_is_valid_and_documents_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    validate(schema)
    operations = {
        (method.upper(), path): spec
        for path, methods in schema["paths"].items()
        for method, spec in methods.items()
    }
    expected = {
        ("POST", "/api/v1/projects"): {"201", "401", "413", "422", "503"},
        ("GET", "/api/v1/projects/{project_id}"): {"200", "401", "404", "422"},
        ("PATCH", "/api/v1/projects/{project_id}"): {"200", "401", "404", "422"},
        ("POST", "/api/v1/projects/{project_id}/memories"): {"201", "401", "404", "413", "422"},
        ("POST", "/api/v1/projects/{project_id}/consolidation-jobs"): {
            "202",
            "401",
            "404",
            "409",
            "413",
            "422",
        },
        ("GET", "/api/v1/projects/{project_id}/consolidation-jobs"): {"200", "404", "422"},
        ("GET", "/api/v1/consolidation-jobs/{job_id}"): {"200", "401", "404", "422"},
        ("GET", "/api/v1/consolidation/schedule"): {"200", "401"},
        ("GET", "/healthz"): {"200", "503"},
        ("GET", "/metrics"): {"200"},
    }
    assert set(operations) == set(expected)
    for operation, statuses in expected.items():
        assert statuses <= set(operations[operation]["responses"]), operation
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_token_matching_is_exact() -> None:
    tokens = {"alice": "a" * 20, "bob": "b" * 20}

    assert match_token("a" * 20, tokens) == "alice"
    assert match_token("b" * 20, tokens) == "bob"
    assert match_token("a" * 19, tokens) is None
    assert match_token("a" * 21, tokens) is None
    assert match_token("", tokens) is None
