"""Bearer-token authentication (api/auth.py): every route of the API answers 401 to a
request without a valid token, and writes nothing; tokens are matched exactly."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from omoi_os.api.auth import match_token
from tests.support.api import AUTH, BOB, TOKEN
from tests.support.factories import Factories
from tests.support.rows import row_counts

MISSING = "missing bearer token (Authorization: Bearer <token>)"
INVALID = "invalid bearer token"


# A valid request to each operation, so the token is the only thing wrong with it.
VALID_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/projects"): {"name": "x"},
    ("PATCH", "/api/v1/projects/{project_id}"): {"name": "renamed"},
    ("POST", "/api/v1/projects/{project_id}/memories"): {
        "memory_type": "warning",
        "execution_summary": "x",
    },
    ("POST", "/api/v1/projects/{project_id}/consolidation-jobs"): {"scope": {"dry_run": True}},
    ("PUT", "/api/v1/projects/{project_id}/pause"): {"reason": "x"},
    ("PUT", "/api/v1/consolidation/schedule/pause"): {"reason": "x"},
    ("POST", "/api/v1/consolidation-jobs/{job_id}/cancel"): {"reason": "x"},
}


def _api_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every operation of the API (/api/v1), from the app's own schema."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return sorted(
        (method.upper(), path)
        for path, methods in paths.items()
        if path.startswith("/api/v1/")
        for method in methods
    )


def test_the_api_has_the_operations_this_module_covers(client: TestClient) -> None:
    assert _api_operations(client) == sorted(
        [
            ("POST", "/api/v1/projects"),
            ("GET", "/api/v1/projects/{project_id}"),
            ("PATCH", "/api/v1/projects/{project_id}"),
            ("POST", "/api/v1/projects/{project_id}/memories"),
            ("GET", "/api/v1/projects/{project_id}/memories"),
            ("GET", "/api/v1/memories/{memory_id}"),
            ("POST", "/api/v1/projects/{project_id}/consolidation-jobs"),
            ("GET", "/api/v1/projects/{project_id}/consolidation-jobs"),
            ("GET", "/api/v1/consolidation-jobs/{job_id}"),
            ("GET", "/api/v1/consolidation/schedule"),
            ("GET", "/api/v1/projects"),
            ("PUT", "/api/v1/projects/{project_id}/pause"),
            ("DELETE", "/api/v1/projects/{project_id}/pause"),
            ("GET", "/api/v1/consolidation-jobs"),
            ("PUT", "/api/v1/consolidation/schedule/pause"),
            ("DELETE", "/api/v1/consolidation/schedule/pause"),
            ("GET", "/api/v1/consolidation/ticks"),
            ("POST", "/api/v1/consolidation-jobs/{job_id}/cancel"),
            ("POST", "/api/v1/consolidation-jobs/{job_id}/retry"),
        ]
    )


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, MISSING),
        ({"Authorization": "Bearer wrong-token-0123456789abc"}, INVALID),
        ({"Authorization": f"Bearer {TOKEN[:-1]}X"}, INVALID),  # one byte off
        ({"Authorization": f"Bearer {TOKEN}X"}, INVALID),  # one byte more
        ({"Authorization": "Bearer "}, MISSING),
        ({"Authorization": f"Basic {TOKEN}"}, MISSING),
        ({"Authorization": TOKEN}, MISSING),
    ],
    ids=["missing", "wrong", "one-byte-off", "one-byte-more", "empty", "not-bearer", "no-scheme"],
)
def test_every_route_answers_401_without_a_valid_token(
    client: TestClient, factories: Factories, headers: dict[str, str], detail: str
) -> None:
    project = factories.project(name="p")
    job = factories.job(project.id)
    memory_id = factories.memory(project.id)
    before = row_counts(factories)
    operations = _api_operations(client)

    answers = {}
    for method, path in operations:
        url = path.format(project_id=project.id, job_id=job.id, memory_id=memory_id)
        body = VALID_BODIES.get((method, path))
        answers[(method, path)] = client.request(
            method, url, headers=headers, **({} if body is None else {"json": body})
        )

    assert len(operations) == 19
    assert {op: answer.status_code for op, answer in answers.items()} == dict.fromkeys(
        operations, 401
    )
    assert {op: answer.json() for op, answer in answers.items()} == {
        op: {"detail": detail} for op in operations
    }
    assert {op: answer.headers["WWW-Authenticate"] for op, answer in answers.items()} == (
        dict.fromkeys(operations, 'Bearer realm="omoi-os"')
    )
    assert before == (1, 1, 1, 0)
    assert row_counts(factories) == before


def test_each_configured_token_is_accepted(client: TestClient, factories: Factories) -> None:
    """The counterpart of the 401s: the same requests with a good token succeed."""
    project = factories.project(name="p")

    alice = client.get(f"/api/v1/projects/{project.id}", headers=AUTH)
    bob = client.get(
        f"/api/v1/projects/{project.id}",
        headers=BOB,
    )
    lowercase_scheme = client.get(
        f"/api/v1/projects/{project.id}", headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert (alice.status_code, bob.status_code, lowercase_scheme.status_code) == (200, 200, 200)


def test_a_token_in_the_query_string_is_not_accepted(
    client: TestClient, factories: Factories
) -> None:
    response = client.get(
        "/api/v1/consolidation/schedule", params={"token": TOKEN, "access_token": TOKEN}
    )
    created = client.post("/api/v1/projects", params={"access_token": TOKEN}, json={"name": "x"})

    for answer in (response, created):
        assert answer.status_code == 401
        assert answer.json() == {"detail": MISSING}
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="omoi-os"'
    assert row_counts(factories) == (0, 0, 0, 0)


def test_token_matching_is_exact() -> None:
    tokens = {"alice": "a" * 20, "bob": "b" * 20}

    assert match_token("a" * 20, tokens) == "alice"
    assert match_token("b" * 20, tokens) == "bob"
    assert match_token("a" * 19, tokens) is None
    assert match_token("a" * 21, tokens) is None
    assert match_token("A" * 20, tokens) is None
    assert match_token("", tokens) is None
    assert match_token("a" * 20, {}) is None
