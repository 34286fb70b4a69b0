"""The projects and memories routes (api/routes/projects.py): their answers, the job
a memory write starts, and their errors (422 naming the field, 404), none of which
writes anything."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from omoi_os.models import Project
from tests.support.api import AUTH, create, create_project
from tests.support.factories import Factories
from tests.support.logs import one, records
from tests.support.rows import row_counts


def _memory(client: TestClient, project_id: str) -> dict[str, Any]:
    body = {"memory_type": "error_fix", "execution_summary": "retry with backoff"}
    return create(client, f"/api/v1/projects/{project_id}/memories", body)


def test_project_create_read_update(client: TestClient, factories: Factories) -> None:
    project = create_project(client)

    read = client.get(f"/api/v1/projects/{project['id']}", headers=AUTH)
    patched = client.patch(
        f"/api/v1/projects/{project['id']}",
        json={"name": "renamed", "is_active": False},
        headers=AUTH,
    )
    renamed_only = client.patch(
        f"/api/v1/projects/{project['id']}", json={"name": "  again  "}, headers=AUTH
    )

    assert (project["name"], project["is_active"]) == ("demo", True)
    assert uuid.UUID(project["id"])
    assert (read.status_code, read.json()) == (200, project)
    assert (patched.status_code, patched.json()) == (
        200,
        project | {"name": "renamed", "is_active": False},
    )
    # Text is kept exactly as sent; a field not given is kept.
    assert (renamed_only.status_code, renamed_only.json()) == (
        200,
        project | {"name": "  again  ", "is_active": False},
    )
    with factories.db.read() as session:
        stored = session.get(Project, uuid.UUID(project["id"]))
        assert stored is not None
        assert (stored.name, stored.is_active) == ("  again  ", False)
    assert row_counts(factories) == (1, 0, 0, 0)


def test_memories_report_the_job_their_write_started(
    client: TestClient, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="omoi_os")
    project = create_project(client)

    answers = [_memory(client, project["id"]) for _ in range(12)]

    job_ids = [answer["consolidation_job_id"] for answer in answers]
    assert job_ids[:9] == [None] * 9
    assert isinstance(job_ids[9], int)
    assert job_ids[10:] == [None, None]
    assert [answer["threshold_check_failed"] for answer in answers] == [False] * 12
    memory = answers[0]["memory"]
    assert (memory["project_id"], memory["memory_type"], memory["execution_summary"]) == (
        project["id"],
        "error_fix",
        "retry with backoff",
    )
    assert (memory["success"], memory["reused_count"], memory["is_consolidated"]) == (
        True,
        0,
        False,
    )
    assert len({answer["memory"]["id"] for answer in answers}) == 12
    job = client.get(f"/api/v1/consolidation-jobs/{job_ids[9]}", headers=AUTH).json()
    assert (job["trigger_type"], job["status"], job["triggered_by"]) == (
        "threshold",
        "pending",
        "threshold",
    )
    created = one(caplog, "job_created")
    assert (created.job_id, created.trigger_type, created.project_id) == (  # type: ignore[attr-defined]
        job_ids[9],
        "threshold",
        project["id"],
    )
    assert len(records(caplog, "threshold_checked")) == 12 - 1  # the 10th logged job_created
    assert records(caplog, "threshold_check_failed") == []
    assert row_counts(factories) == (1, 12, 1, 1)


# --- errors: each status with its detail, and no rows written ---------------------------

MEMORY = {"memory_type": "warning", "execution_summary": "x"}


@pytest.mark.parametrize(
    ("method", "path", "body", "location"),
    [
        ("post", "/api/v1/projects", {"name": ""}, ["body", "name"]),
        ("post", "/api/v1/projects", {"name": "x" * 201}, ["body", "name"]),
        ("post", "/api/v1/projects", {}, ["body", "name"]),
        ("post", "/api/v1/projects", {"name": "x", "owner": "me"}, ["body", "owner"]),
        ("patch", "/api/v1/projects/{pid}", {}, ["body"]),
        ("patch", "/api/v1/projects/{pid}", {"is_active": None}, ["body"]),
        ("patch", "/api/v1/projects/{pid}", {"name": None}, ["body"]),
        ("post", "/api/v1/projects", {"name": "x", "is_active": 0}, ["body", "is_active"]),
        ("post", "/api/v1/projects", {"name": "nul\u0000byte"}, ["body", "name"]),
        # A JSON escape for half a surrogate pair: valid JSON, not storable text.
        ("post", "/api/v1/projects", b'{"name": "lone \\ud800 surrogate"}', ["body", "name"]),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            MEMORY | {"learned_at": "0001-01-01T00:00:00+01:00"},
            ["body", "learned_at"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            MEMORY | {"learned_at": "9999-12-31T23:59:00-01:00"},
            ["body", "learned_at"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            MEMORY | {"reused_count": "3"},
            ["body", "reused_count"],
        ),
        ("get", "/api/v1/projects/not-a-uuid", None, ["path", "project_id"]),
        ("patch", "/api/v1/projects/123", {"name": "x"}, ["path", "project_id"]),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            {"memory_type": "gossip", "execution_summary": "x"},
            ["body", "memory_type"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            MEMORY | {"reused_count": -1},
            ["body", "reused_count"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            MEMORY | {"learned_at": "2026-01-01T00:00"},
            ["body", "learned_at"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/memories",
            MEMORY | {"execution_summary": "x" * 20_001},
            ["body", "execution_summary"],
        ),
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
    project = create_project(client)
    before = row_counts(factories)

    kwargs: dict[str, Any] = {"headers": AUTH}
    if isinstance(body, bytes):
        kwargs |= {"content": body, "headers": AUTH | {"Content-Type": "application/json"}}
    elif body is not None:
        kwargs["json"] = body
    response = client.request(method, path.format(pid=project["id"]), **kwargs)

    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [location]
    assert before == (1, 0, 0, 0)
    assert row_counts(factories) == before
    with factories.db.read() as session:
        stored = session.get(Project, uuid.UUID(project["id"]))
        assert stored is not None
        assert (stored.name, stored.is_active) == ("demo", True)


def test_a_body_that_is_not_json_gets_422(client: TestClient, factories: Factories) -> None:
    response = client.post(
        "/api/v1/projects",
        content=b'{"name": ',
        headers=AUTH | {"Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert [(e["type"], e["loc"]) for e in response.json()["detail"]] == [
        ("json_invalid", ["body", 9])
    ]
    assert row_counts(factories) == (0, 0, 0, 0)


def test_not_found_answers(client: TestClient, factories: Factories) -> None:
    missing = uuid.uuid4()

    answers = [
        client.get(f"/api/v1/projects/{missing}", headers=AUTH),
        client.patch(f"/api/v1/projects/{missing}", json={"name": "x"}, headers=AUTH),
        client.post(f"/api/v1/projects/{missing}/memories", json=MEMORY, headers=AUTH),
    ]

    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (404, {"detail": f"project {missing} does not exist"})
    ] * 3
    assert row_counts(factories) == (0, 0, 0, 0)
