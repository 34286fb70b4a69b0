"""The standalone app (`create_app`), in process: its lifespan starts and stops the
runtime, what it adds around our routers (405 with every method, health and metrics
at the root without a token), the body limit, and its OpenAPI schema. The routes
themselves are tested in routes/, authentication in test_auth.py; test_e2e.py drives
a real `omoi-os serve` process."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from sqlalchemy.engine import make_url

from omoi_os import testing
from omoi_os.api import create_app
from omoi_os.api.body_limit import MAX_BODY_BYTES
from omoi_os.config import AppSettings
from omoi_os.migrations import SchemaNotCurrent, head_revision
from tests.conftest import require_postgres
from tests.support.api import AUTH, health_without_skew
from tests.support.factories import Factories
from tests.support.logs import one, records
from tests.support.rows import row_counts

# --- lifespan ------------------------------------------------------------------------------


def _runtime_threads() -> list[threading.Thread]:
    prefixes = ("APScheduler", "consolidation", "task-queue-listener")
    return [t for t in threading.enumerate() if t.name.startswith(prefixes)]


def _connections_of(url: str) -> int:
    """Open connections of our application_name to the database of `url`."""
    with psycopg.connect(testing.libpq_url(testing.admin_url())) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'omoi-os'",
            (make_url(url).database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_lifespan_starts_and_stops_everything(
    settings: AppSettings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os")
    app = create_app(settings.model_copy(update={"worker_enabled": True}))
    runtime = app.state.runtime
    assert (runtime.running, runtime.worker.running) == (False, False)  # building does no I/O

    with TestClient(app) as test_client:
        assert test_client.get("/healthz").status_code == 200
        assert (runtime.running, runtime.worker.running) == (True, True)
        assert runtime.triggers.scheduler.running
        assert len(records(caplog, "app_started")) == 1
        assert records(caplog, "app_stopped") == []

    assert (runtime.running, runtime.worker.running) == (False, False)
    assert not runtime.triggers.scheduler.running
    assert runtime.db.engine.pool.checkedout() == 0
    for thread in _runtime_threads():
        thread.join(timeout=10)
    assert _runtime_threads() == []
    assert len(records(caplog, "scheduler_started")) == 1
    assert len(records(caplog, "scheduler_stopped")) == 1
    one(caplog, "app_stopped")
    if database_url.startswith("postgresql"):
        assert _connections_of(database_url) == 0


@pytest.mark.postgres_only
def test_startup_on_an_unmigrated_postgres_fails_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_postgres()
    caplog.set_level(logging.INFO, logger="omoi_os")
    with testing.scratch_database("omoi_unmigrated", migrate=False) as url:
        app = create_app(AppSettings(database_url=url))
        runtime = app.state.runtime
        with (
            pytest.raises(
                SchemaNotCurrent,
                match=rf"has never been migrated; this code needs {head_revision()}\. "
                r"Run `omoi-os migrate`",
            ),
            TestClient(app),
        ):
            pass

        assert (runtime.running, runtime.worker.running) == (False, False)
        assert _runtime_threads() == []
        assert records(caplog, "app_started") == []
        assert records(caplog, "scheduler_started") == []
        one(caplog, "app_stopped")
        assert _connections_of(url) == 0  # the failed start-up closed what it opened


# --- what the app adds around the routers -----------------------------------------------


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.delete(f"/api/v1/projects/{uuid.uuid4()}", headers=AUTH)
    root = client.delete("/healthz")

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, PATCH, OPTIONS"
    assert response.json() == {"detail": "Method Not Allowed"}
    assert root.status_code == 405
    assert root.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_a_path_outside_the_schema_answers_405_as_fastapi_does(client: TestClient) -> None:
    posted = client.post("/docs")
    options = client.options("/docs")

    assert (posted.status_code, posted.json()) == (405, {"detail": "Method Not Allowed"})
    assert sorted(posted.headers["Allow"].split(", ")) == ["GET", "HEAD"]  # Starlette's
    assert (options.status_code, options.json()) == (405, {"detail": "Method Not Allowed"})


def test_405_counts_a_route_added_after_the_first_405(client: TestClient) -> None:
    before = client.delete("/healthz")
    client.app.add_api_route("/healthz", lambda: None, methods=["POST"])  # type: ignore[attr-defined]
    after = client.delete("/healthz")

    assert before.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert after.headers["Allow"] == "GET, HEAD, POST, OPTIONS"


def test_health_and_metrics_need_no_token(client: TestClient) -> None:
    health = client.get("/healthz")
    metrics = client.get("/metrics")
    api = client.get("/api/v1/consolidation/schedule")

    assert (health.status_code, health_without_skew(health)) == (
        200,
        {
            "status": "ok",
            "database": "ok",
            "scheduler": "running",
            "queue": "ok",
            "oldest_claimable_seconds": 0.0,
            "clock": "ok",
        },
    )
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "omoi_database_up 1.0" in metrics.text
    assert api.status_code == 401  # only the root probes are open


def test_bodies_over_256_kib_get_413_and_write_nothing(
    client: TestClient, factories: Factories
) -> None:
    assert MAX_BODY_BYTES == 256 * 1024
    created = client.post("/api/v1/projects", json={"name": "demo"}, headers=AUTH)
    assert created.status_code == 201, created.text
    url = f"/api/v1/projects/{created.json()['id']}/memories"
    before = row_counts(factories)
    huge = {"memory_type": "learning", "execution_summary": "x" * MAX_BODY_BYTES}

    declared = client.post(url, json=huge, headers=AUTH)
    streamed = client.post(
        url,
        content=iter(
            [b'{"memory_type": "learning", "execution_summary": "', b"x" * MAX_BODY_BYTES, b'"}']
        ),
        headers=AUTH | {"Content-Type": "application/json"},
    )
    project = client.post(
        "/api/v1/projects", json={"name": "y" * (MAX_BODY_BYTES + 1)}, headers=AUTH
    )

    expected = {"detail": "request body larger than 262144 bytes"}
    assert (declared.status_code, declared.json()) == (413, expected)
    assert (streamed.status_code, streamed.json()) == (413, expected)
    assert (project.status_code, project.json()) == (413, expected)
    assert before == (1, 0, 0, 0)
    assert row_counts(factories) == before


# --- the OpenAPI schema -------------------------------------------------------------------

API_ERRORS = {"401", "413", "422", "503"}  # every API route: auth, body limit, validation, db
BODY_ERRORS = API_ERRORS | {"415"}  # a route that reads a body: and it is not JSON


def test_openapi_schema_is_valid_and_documents_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    validate(schema)
    documented = {
        (method.upper(), path): set(spec["responses"])
        for path, methods in schema["paths"].items()
        for method, spec in methods.items()
    }
    # Exactly these statuses: a route that can answer 401 (every /api/v1 one) says so.
    assert documented == {
        ("POST", "/api/v1/projects"): {"201", "400", "409"} | BODY_ERRORS,
        ("GET", "/api/v1/projects/{project_id}"): {"200", "404"} | API_ERRORS,
        ("PATCH", "/api/v1/projects/{project_id}"): {"200", "400", "404"} | BODY_ERRORS,
        ("POST", "/api/v1/projects/{project_id}/memories"): {"201", "400", "404"} | BODY_ERRORS,
        ("GET", "/api/v1/projects/{project_id}/memories"): {"200", "404"} | API_ERRORS,
        ("GET", "/api/v1/memories/{memory_id}"): {"200", "404"} | API_ERRORS,
        ("POST", "/api/v1/projects/{project_id}/consolidation-jobs"): {
            "202",
            "400",
            "404",
            "409",
        }
        | BODY_ERRORS,
        ("GET", "/api/v1/projects/{project_id}/consolidation-jobs"): {"200", "404"} | API_ERRORS,
        ("GET", "/api/v1/consolidation-jobs/{job_id}"): {"200", "404"} | API_ERRORS,
        ("GET", "/api/v1/consolidation/schedule"): {"200", "401", "413", "503"},
        ("GET", "/api/v1/projects"): {"200"} | API_ERRORS,
        ("PUT", "/api/v1/projects/{project_id}/pause"): {"200", "400", "404"} | BODY_ERRORS,
        ("DELETE", "/api/v1/projects/{project_id}/pause"): {"204", "404"} | API_ERRORS,
        ("GET", "/api/v1/consolidation-jobs"): {"200"} | API_ERRORS,
        ("PUT", "/api/v1/consolidation/schedule/pause"): {"200", "400"} | BODY_ERRORS,
        ("DELETE", "/api/v1/consolidation/schedule/pause"): {"204", "401", "413", "503"},
        ("GET", "/api/v1/consolidation/ticks"): {"200"} | API_ERRORS,
        ("POST", "/api/v1/consolidation-jobs/{job_id}/cancel"): {"200", "202", "400", "404", "409"}
        | BODY_ERRORS,
        ("POST", "/api/v1/consolidation-jobs/{job_id}/retry"): {"202", "404", "409"} | API_ERRORS,
        ("GET", "/healthz"): {"200", "503"},
        ("GET", "/metrics"): {"200"},
    }
    conflict = schema["paths"]["/api/v1/projects/{project_id}/consolidation-jobs"]["post"]
    assert _schema_ref(conflict["responses"]["409"]) == "#/components/schemas/ConflictBody"
    for (method, path), _ in documented.items():
        responses = schema["paths"][path][method.lower()]["responses"]
        if "401" in responses:
            assert _schema_ref(responses["401"]) == "#/components/schemas/ErrorBody", path
        if "415" in responses:
            assert _schema_ref(responses["415"]) == "#/components/schemas/ErrorBody", path
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _schema_ref(response: dict[str, Any]) -> str:
    return str(response["content"]["application/json"]["schema"]["$ref"])
