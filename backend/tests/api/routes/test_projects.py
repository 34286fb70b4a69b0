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
from tests.support.api import AUTH, BOB, create, create_project
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
THRESHOLD_FIELD = ["body", "consolidation_threshold"]
COOLDOWN_FIELD = ["body", "consolidation_cooldown"]


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
        ("patch", "/api/v1/projects/{pid}", {"consolidation_threshold": 0}, THRESHOLD_FIELD),
        ("patch", "/api/v1/projects/{pid}", {"consolidation_threshold": 100_001}, THRESHOLD_FIELD),
        ("patch", "/api/v1/projects/{pid}", {"consolidation_threshold": "5"}, THRESHOLD_FIELD),
        ("patch", "/api/v1/projects/{pid}", {"consolidation_cooldown": -1}, COOLDOWN_FIELD),
        ("patch", "/api/v1/projects/{pid}", {"consolidation_cooldown": 604_801}, COOLDOWN_FIELD),
        ("put", "/api/v1/projects/{pid}/pause", {"reason": "x" * 501}, ["body", "reason"]),
        ("put", "/api/v1/projects/{pid}/pause", {"why": "x"}, ["body", "why"]),
        ("get", "/api/v1/projects?active=maybe", None, ["query", "active"]),
        ("get", "/api/v1/projects?paused=maybe", None, ["query", "paused"]),
        ("get", "/api/v1/projects?limit=0", None, ["query", "limit"]),
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
        assert (stored.name, stored.is_active, stored.paused_at) == ("demo", True, None)
        assert (stored.consolidation_threshold, stored.consolidation_cooldown) == (None, None)


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
        client.put(f"/api/v1/projects/{missing}/pause", headers=AUTH),
        client.delete(f"/api/v1/projects/{missing}/pause", headers=AUTH),
    ]

    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (404, {"detail": f"project {missing} does not exist"})
    ] * 5
    assert row_counts(factories) == (0, 0, 0, 0)


# --- pausing, own threshold and cooldown, listing ---------------------------------------


def _stored(factories: Factories, project_id: str) -> Project:
    with factories.db.read() as session:
        stored = session.get(Project, uuid.UUID(project_id))
        assert stored is not None
        return stored


def test_pause_and_resume_a_project(client: TestClient, factories: Factories) -> None:
    project = create_project(client)
    url = f"/api/v1/projects/{project['id']}/pause"

    paused = client.put(url, json={"reason": "agent writes garbage"}, headers=BOB)
    again = client.put(url, headers=AUTH)  # paused already: bob's pause is kept
    read = client.get(f"/api/v1/projects/{project['id']}", headers=AUTH)

    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert (body["paused_by"], body["pause_reason"]) == ("bob", "agent writes garbage")
    assert body["paused_at"] is not None
    assert (again.status_code, again.json()) == (200, body)
    assert read.json() == body
    stored = _stored(factories, project["id"])
    assert (stored.paused_by, stored.pause_reason) == ("bob", "agent writes garbage")

    resumed = [client.delete(url, headers=AUTH) for _ in range(2)]

    assert [(answer.status_code, answer.content) for answer in resumed] == [(204, b"")] * 2
    stored = _stored(factories, project["id"])
    assert (stored.paused_at, stored.paused_by, stored.pause_reason) == (None, None, None)
    assert client.get(f"/api/v1/projects/{project['id']}", headers=AUTH).json() == project


def test_a_project_s_own_threshold_and_cooldown(client: TestClient, factories: Factories) -> None:
    project = create_project(client)
    url = f"/api/v1/projects/{project['id']}"
    assert (project["consolidation_threshold"], project["effective_threshold"]) == (None, 10)
    assert (project["consolidation_cooldown"], project["effective_cooldown"]) == (None, 300)

    both = client.patch(
        url, json={"consolidation_threshold": 3, "consolidation_cooldown": 0}, headers=AUTH
    )
    renamed = client.patch(url, json={"name": "renamed"}, headers=AUTH)  # overrides kept
    reset = client.patch(url, json={"consolidation_threshold": None}, headers=AUTH)

    assert both.status_code == 200, both.text
    overrides = ("consolidation_threshold", "consolidation_cooldown")
    effective = ("effective_threshold", "effective_cooldown")
    assert [
        [answer.json()[key] for key in overrides + effective] for answer in (both, renamed)
    ] == [[3, 0, 3, 0]] * 2
    assert [reset.json()[key] for key in overrides + effective] == [None, 0, 10, 0]
    stored = _stored(factories, project["id"])
    assert (stored.name, stored.consolidation_threshold, stored.consolidation_cooldown) == (
        "renamed",
        None,
        0,
    )


def test_projects_listed_in_pages_and_filtered(client: TestClient, factories: Factories) -> None:
    running = [create_project(client, name=f"p{n}")["id"] for n in range(3)]
    inactive = create_project(client, name="off", is_active=False)["id"]
    paused = create_project(client, name="paused")["id"]
    client.put(f"/api/v1/projects/{paused}/pause", headers=AUTH)

    def ids(**params: Any) -> list[str]:
        response = client.get("/api/v1/projects", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        return [project["id"] for project in response.json()["items"]]

    everyone = sorted([*running, inactive, paused])
    assert ids() == everyone
    assert ids(active="true", paused="false") == sorted(running)
    assert ids(active="false") == [inactive]
    assert ids(paused="true") == [paused]
    first = client.get("/api/v1/projects?limit=2", headers=AUTH).json()
    last = client.get("/api/v1/projects?limit=2&offset=4", headers=AUTH).json()
    assert ([p["id"] for p in first["items"]], first["next_offset"]) == (everyone[:2], 2)
    assert ([p["id"] for p in last["items"]], last["next_offset"]) == (everyone[4:], None)
    assert row_counts(factories) == (5, 0, 0, 0)
