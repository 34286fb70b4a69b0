"""Talking to the app of the API tests (the `client` fixture, tests/api/conftest.py):
the tokens it accepts, and the requests that set a test up."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

TOKEN = "alice-secret-token-0123456789"
BOB_TOKEN = "bob-secret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOB = {"Authorization": f"Bearer {BOB_TOKEN}"}


def create(client: TestClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST `body` to `url` as alice; the body of the 201 it must answer."""
    response = client.post(url, json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_project(client: TestClient, **body: Any) -> dict[str, Any]:
    """A project named "demo" (unless `body` says otherwise), as alice creates it."""
    return create(client, "/api/v1/projects", {"name": "demo", **body})


def health_without_skew(response: Any) -> dict[str, Any]:
    """/healthz's body without `clock_skew_seconds`, checked on the way: null (SQLite's
    clock is this machine's) or, the server being on this machine, under a second."""
    body: dict[str, Any] = response.json()
    skew = body.pop("clock_skew_seconds")
    assert skew is None or abs(skew) < 1.0, skew
    return body
