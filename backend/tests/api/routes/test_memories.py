"""Reading memories over HTTP (api/routes/memories.py): a project's memories with what
consolidation decided, filtered, ordered and in pages; one memory; HEAD as GET; 404
for an unknown project or memory and 422 naming a bad query field, none of which
writes anything."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from omoi_os.models import MemoryTier
from tests.support.api import AUTH
from tests.support.factories import DECIDING_JOB_ID, T0, Factories, decided
from tests.support.rows import row_counts

HOT, WARM = MemoryTier.HOT, MemoryTier.WARM


class Project:
    """A project with two hot memories tied on score, a warm one above them, and one
    not consolidated yet; ids in that order."""

    def __init__(self, factories: Factories) -> None:
        self.id = factories.project().id
        self.hot = factories.memory(self.id, **decided(HOT, 0.8, 1, memory_metadata={"ref": 9}))
        self.tied = factories.memory(self.id, **decided(HOT, 0.8, 2))
        self.warm = factories.memory(self.id, **decided(WARM, 0.9, 40, tier_expires_at=None))
        self.new = factories.memory(self.id, learned_at=T0 + timedelta(hours=1))
        self.url = f"/api/v1/projects/{self.id}/memories"


@pytest.fixture
def project(factories: Factories) -> Project:
    return Project(factories)


def _ids(client: TestClient, url: str, **params: Any) -> list[int]:
    response = client.get(url, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_a_listing_item_says_what_consolidation_decided(
    client: TestClient, project: Project
) -> None:
    response = client.get(project.url, params={"tier": "hot", "limit": 1}, headers=AUTH)

    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {
                "id": project.tied,
                "memory_type": "learning",
                "execution_summary": "learned something",
                "learned_at": "2026-01-03T12:00:00Z",
                "metadata": None,
                "is_consolidated": True,
                "consolidated_at": "2026-01-05T12:00:00Z",
                "consolidation_job_id": DECIDING_JOB_ID,
                "tier": "hot",
                "score": 0.8,
                "tier_expires_at": "2026-02-04T12:00:00Z",
            }
        ],
        "limit": 1,
        "offset": 0,
        "next_offset": 1,
    }


def test_listings_filter_and_order(client: TestClient, project: Project) -> None:
    p = project
    assert _ids(client, p.url) == [p.warm, p.tied, p.hot, p.new]
    assert _ids(client, p.url, order="score", tier="hot") == [p.tied, p.hot]
    assert _ids(client, p.url, tier="cold") == []
    assert _ids(client, p.url, consolidated="true") == [p.warm, p.tied, p.hot]
    assert _ids(client, p.url, consolidated="false") == [p.new]
    assert _ids(client, p.url, order="learned_at") == [p.new, p.hot, p.tied, p.warm]
    assert _ids(client, p.url, order="learned_at", tier="hot", consolidated="true") == [
        p.hot,
        p.tied,
    ]


def test_pages_follow_next_offset(client: TestClient, project: Project) -> None:
    pages, offset = [], 0
    while offset is not None:
        response = client.get(project.url, params={"limit": 3, "offset": offset}, headers=AUTH)
        assert response.status_code == 200
        pages.append(response.json())
        offset = pages[-1]["next_offset"]

    assert [(page["limit"], page["offset"], page["next_offset"]) for page in pages] == [
        (3, 0, 3),
        (3, 3, None),
    ]
    assert [item["id"] for page in pages for item in page["items"]] == [
        project.warm,
        project.tied,
        project.hot,
        project.new,
    ]


def test_a_memory_reads_back_with_its_project(client: TestClient, project: Project) -> None:
    response = client.get(f"/api/v1/memories/{project.hot}", headers=AUTH)
    unconsolidated = client.get(f"/api/v1/memories/{project.new}", headers=AUTH)

    assert response.status_code == 200
    assert response.json() == {
        "id": project.hot,
        "project_id": str(project.id),
        "memory_type": "learning",
        "execution_summary": "learned something",
        "success": True,
        "reused_count": 0,
        "learned_at": "2026-01-04T12:00:00Z",
        "metadata": {"ref": 9},
        "is_consolidated": True,
        "consolidated_at": "2026-01-05T12:00:00Z",
        "consolidation_job_id": DECIDING_JOB_ID,
        "tier": "hot",
        "score": 0.8,
        "tier_expires_at": "2026-02-04T12:00:00Z",
    }
    assert unconsolidated.status_code == 200
    assert {
        name: unconsolidated.json()[name]
        for name in ("is_consolidated", "consolidated_at", "consolidation_job_id", "tier")
    } == {
        "is_consolidated": False,
        "consolidated_at": None,
        "consolidation_job_id": None,
        "tier": None,
    }
    assert (unconsolidated.json()["score"], unconsolidated.json()["tier_expires_at"]) == (
        None,
        None,
    )


def test_head_answers_as_get_without_a_body(client: TestClient, project: Project) -> None:
    listing = client.head(project.url, params={"tier": "hot"}, headers=AUTH)
    one = client.head(f"/api/v1/memories/{project.hot}", headers=AUTH)
    missing = client.head("/api/v1/memories/999999", headers=AUTH)
    get = client.get(project.url, params={"tier": "hot"}, headers=AUTH)

    assert (listing.status_code, listing.content) == (200, b"")
    assert listing.headers["content-length"] == get.headers["content-length"]
    assert (one.status_code, one.content) == (200, b"")
    assert (missing.status_code, missing.content) == (404, b"")


def test_not_found_answers(client: TestClient, factories: Factories, project: Project) -> None:
    missing = uuid.uuid4()
    empty = factories.project(name="empty")
    before = row_counts(factories)

    answers = [
        client.get(f"/api/v1/projects/{missing}/memories", headers=AUTH),
        client.get(f"/api/v1/projects/{missing}/memories?tier=hot&order=learned_at", headers=AUTH),
        client.get("/api/v1/memories/999999", headers=AUTH),
    ]
    of_empty = client.get(f"/api/v1/projects/{empty.id}/memories", headers=AUTH)

    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (404, {"detail": f"project {missing} does not exist"}),
        (404, {"detail": f"project {missing} does not exist"}),
        (404, {"detail": "memory 999999 does not exist"}),
    ]
    assert (of_empty.status_code, of_empty.json()) == (
        200,
        {"items": [], "limit": 50, "offset": 0, "next_offset": None},
    )
    assert before == (2, 4, 0, 0)
    assert row_counts(factories) == before


@pytest.mark.parametrize(
    ("query", "location", "error"),
    [
        ("tier=lukewarm", ["query", "tier"], "enum"),
        ("order=newest", ["query", "order"], "literal_error"),
        ("consolidated=maybe", ["query", "consolidated"], "bool_parsing"),
        ("limit=0", ["query", "limit"], "greater_than_equal"),
        ("limit=201", ["query", "limit"], "less_than_equal"),
        ("offset=-1", ["query", "offset"], "greater_than_equal"),
    ],
)
def test_a_bad_query_field_is_422_naming_it(
    client: TestClient,
    factories: Factories,
    project: Project,
    query: str,
    location: list[str],
    error: str,
) -> None:
    before = row_counts(factories)

    response = client.get(f"{project.url}?{query}", headers=AUTH)

    assert response.status_code == 422, response.text
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(location, error)]
    assert row_counts(factories) == before


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/api/v1/memories/0", ["path", "memory_id"]),
        (f"/api/v1/memories/{2**63}", ["path", "memory_id"]),
        ("/api/v1/memories/one", ["path", "memory_id"]),
        ("/api/v1/projects/not-a-uuid/memories", ["path", "project_id"]),
    ],
)
def test_a_bad_path_is_422_naming_it(client: TestClient, path: str, location: list[str]) -> None:
    response = client.get(path, headers=AUTH)

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [location]
