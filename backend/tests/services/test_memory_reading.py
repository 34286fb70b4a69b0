"""MemoryService's reads on both databases: a project's memories by score or by age,
filtered by tier and by consolidation, in pages that follow `next_offset`; one memory
by id; and the errors (unknown project or memory, a bad argument named)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from omoi_os.config import AppSettings
from omoi_os.errors import MemoryNotFound, ProjectNotFound
from omoi_os.models import MemoryTier, MemoryType
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, MemoryView
from omoi_os.services.paging import Page
from tests.support.factories import DECIDING_JOB_ID, T0, Factories, decided

HOT, WARM, COLD = MemoryTier.HOT, MemoryTier.WARM, MemoryTier.COLD

# A project's memories, in the order they are written (so ids increase down the list):
# ties in score (h1, h2) and in age (h1, c2), a warm memory scored above every hot one,
# and two not consolidated yet (no tier, no score).
MEMORIES: dict[str, dict[str, Any]] = {
    "h1": decided(HOT, 0.9, 1, memory_metadata={"run": "r-1", "tags": ["ci", 3]}),
    "h2": decided(HOT, 0.9, 2),
    "h3": decided(HOT, 0.5, 3),
    "w1": decided(WARM, 0.95, 40),
    "w2": decided(WARM, 0.3, 41),
    "c1": decided(COLD, 0.7, 100, tier_expires_at=None),
    "c2": decided(COLD, 0.1, 1),
    "u1": {"learned_at": T0},
    "u2": {"learned_at": T0 - timedelta(days=5)},
}


class Listed:
    """The project of MEMORIES, another project's memories beside it, and the service."""

    def __init__(self, factories: Factories, memories: MemoryService) -> None:
        self.project, other = factories.projects(2)
        self.ids = {name: factories.memory(self.project, **row) for name, row in MEMORIES.items()}
        factories.memory(other, **decided(HOT, 0.99, 0))
        factories.memory(other, learned_at=T0 + timedelta(days=1))
        self.memories = memories

    def names(self, **listing: Any) -> list[str]:
        """The names of what one page of the listing holds."""
        page = self.memories.list_sync(self.project, limit=200, **listing)
        assert page.next_offset is None
        return [self.name(view.id) for view in page.items]

    def name(self, memory_id: int) -> str:
        return next(name for name, i in self.ids.items() if i == memory_id)


@pytest.fixture
def memories(db: DatabaseService) -> MemoryService:
    settings = AppSettings(database_url=db.url)
    return MemoryService(db, ConsolidationTriggerService(db, settings=settings))


@pytest.fixture
def listed(factories: Factories, memories: MemoryService) -> Listed:
    return Listed(factories, memories)


BY_SCORE = ["w1", "h2", "h1", "c1", "h3", "w2", "c2", "u2", "u1"]
BY_AGE = ["u1", "c2", "h1", "h2", "h3", "u2", "w1", "w2", "c1"]

LISTINGS = [
    # By score: every tier merged, ties broken by the higher id, the backlog last.
    ({}, BY_SCORE),
    ({"tier": HOT}, ["h2", "h1", "h3"]),
    ({"tier": WARM}, ["w1", "w2"]),
    ({"tier": COLD}, ["c1", "c2"]),
    ({"consolidated": True}, ["w1", "h2", "h1", "c1", "h3", "w2", "c2"]),
    ({"consolidated": False}, ["u2", "u1"]),
    ({"tier": HOT, "consolidated": True}, ["h2", "h1", "h3"]),
    ({"tier": HOT, "consolidated": False}, []),
    # By age: newest first, ties broken by the higher id.
    ({"order": "learned_at"}, BY_AGE),
    ({"order": "learned_at", "tier": HOT}, ["h1", "h2", "h3"]),
    ({"order": "learned_at", "tier": COLD, "consolidated": True}, ["c2", "c1"]),
    ({"order": "learned_at", "consolidated": False}, ["u1", "u2"]),
    ({"order": "learned_at", "consolidated": True}, ["c2", "h1", "h2", "h3", "w1", "w2", "c1"]),
]
LISTING_IDS = [
    ",".join(f"{key}={value}" for key, value in listing.items()) or "score"
    for listing, _ in LISTINGS
]


@pytest.mark.parametrize(("listing", "expected"), LISTINGS, ids=LISTING_IDS)
def test_a_listing_holds_the_project_s_memories_in_its_order(
    listed: Listed, listing: dict[str, Any], expected: list[str]
) -> None:
    assert listed.names(**listing) == expected


@pytest.mark.parametrize(("listing", "expected"), LISTINGS, ids=LISTING_IDS)
def test_pages_follow_next_offset_to_the_end_of_the_listing(
    listed: Listed, listing: dict[str, Any], expected: list[str]
) -> None:
    pages: list[Page[MemoryView]] = []
    offset: int | None = 0
    while offset is not None:
        pages.append(listed.memories.list_sync(listed.project, limit=2, offset=offset, **listing))
        offset = pages[-1].next_offset

    assert [listed.name(view.id) for page in pages for view in page.items] == expected
    count = len(expected)
    assert [(page.limit, page.offset) for page in pages] == [
        (2, offset) for offset in range(0, max(count, 1), 2)
    ]
    assert [page.next_offset for page in pages] == [*range(2, count, 2), None]


def test_a_page_past_the_end_is_empty(listed: Listed) -> None:
    page = listed.memories.list_sync(listed.project, tier=HOT, limit=3, offset=3)
    full = listed.memories.list_sync(listed.project, tier=HOT, limit=3)

    assert page == Page([], 3, 3, None)
    assert (len(full.items), full.next_offset) == (3, None)


def test_a_memory_reads_back_with_every_field(listed: Listed, factories: Factories) -> None:
    h1, u1 = listed.ids["h1"], listed.ids["u1"]

    assert listed.memories.get_sync(h1) == MemoryView(
        id=h1,
        project_id=listed.project,
        memory_type=MemoryType.LEARNING,
        execution_summary="learned something",
        success=True,
        reused_count=0,
        learned_at=T0 - timedelta(days=1),
        metadata={"run": "r-1", "tags": ["ci", 3]},
        is_consolidated=True,
        consolidated_at=T0,
        consolidation_job_id=DECIDING_JOB_ID,
        score=0.9,
        tier=HOT,
        tier_expires_at=T0 + timedelta(days=30),
    )
    unconsolidated = listed.memories.get_sync(u1)
    assert (unconsolidated.is_consolidated, unconsolidated.consolidated_at) == (False, None)
    assert (unconsolidated.tier, unconsolidated.score, unconsolidated.tier_expires_at) == (
        None,
        None,
        None,
    )
    # A listing's items are the same views.
    (first,) = listed.memories.list_sync(listed.project, tier=HOT, limit=1, offset=1).items
    assert first == listed.memories.get_sync(h1)


def test_a_tier_given_as_text_is_read_as_the_tier(listed: Listed) -> None:
    assert listed.names(tier="warm") == ["w1", "w2"]


def test_a_project_without_memories_lists_an_empty_page(
    factories: Factories, memories: MemoryService
) -> None:
    project = factories.project()

    assert memories.list_sync(project.id) == Page([], 50, 0, None)
    assert memories.list_sync(str(project.id), order="learned_at", tier=COLD) == Page(
        [], 50, 0, None
    )


@pytest.mark.parametrize("project_id", [uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"])
def test_listing_an_unknown_project_raises_project_not_found(
    listed: Listed, project_id: uuid.UUID | str
) -> None:
    with pytest.raises(ProjectNotFound) as raised:
        listed.memories.list_sync(project_id)

    assert raised.value.project_id == project_id
    assert str(raised.value) == "project 00000000-0000-0000-0000-000000000001 does not exist"


def test_listing_with_text_that_is_no_project_id_raises_project_not_found(
    memories: MemoryService,
) -> None:
    with pytest.raises(ProjectNotFound, match=r"^project not-a-uuid does not exist$"):
        memories.list_sync("not-a-uuid")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"order": "newest"}, "order must be one of score, learned_at, not 'newest'"),
        ({"tier": "lukewarm"}, "tier must be one of hot, warm, cold, not 'lukewarm'"),
        ({"limit": 0}, "limit must be between 1 and 200, not 0"),
        ({"limit": 201}, "limit must be between 1 and 200, not 201"),
        ({"offset": -1}, "offset must be between 0 and 1000000, not -1"),
    ],
    ids=["order", "tier", "limit-0", "limit-201", "offset"],
)
def test_a_bad_argument_is_a_value_error_naming_it(
    listed: Listed, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        listed.memories.list_sync(listed.project, **arguments)

    assert str(raised.value) == message


@pytest.mark.parametrize("memory_id", [0, -1, 10_000, 2**63 - 1, 2**63])
def test_reading_an_unknown_memory_raises_memory_not_found(listed: Listed, memory_id: int) -> None:
    with pytest.raises(MemoryNotFound) as raised:
        listed.memories.get_sync(memory_id)

    assert raised.value.memory_id == memory_id
    assert str(raised.value) == f"memory {memory_id} does not exist"
    assert isinstance(raised.value, LookupError)


@pytest.mark.asyncio
async def test_list_and_get_are_awaitable_twins(listed: Listed) -> None:
    page = await listed.memories.list(listed.project, tier=HOT, limit=2)
    one = await listed.memories.get(listed.ids["w1"])

    assert page == listed.memories.list_sync(listed.project, tier=HOT, limit=2)
    assert one == listed.memories.get_sync(listed.ids["w1"])
    assert (MemoryService.list.__name__, MemoryService.get.__name__) == ("list", "get")
    with pytest.raises(MemoryNotFound):
        await listed.memories.get(10_000)
