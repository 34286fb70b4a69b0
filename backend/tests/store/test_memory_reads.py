"""How store/memories.py reads a project's memories back, as each database plans it:
one tier by score is read backwards from the ranking index with no sort; every tier
by score reads each tier's end of it and sorts only what those reads return; the
unconsolidated ones come from the partial index of the backlog."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Connection

from omoi_os.models import MemoryTier, TaskMemory
from omoi_os.services.database import DatabaseService
from omoi_os.store import memories as memory_store
from omoi_os.store.sql import Bound
from tests.support.factories import T0, Factories

RANKING = "ix_task_memories_ranking"
BACKLOG = "ix_task_memories_unconsolidated"
TIERS = (MemoryTier.HOT, MemoryTier.WARM, MemoryTier.WARM, MemoryTier.COLD, MemoryTier.COLD)


def _project_rows(project_id: uuid.UUID, count: int) -> list[dict[str, Any]]:
    """A project's memories as consolidation leaves them: tiers spread, scores varied,
    one in a hundred not consolidated yet."""
    rows = []
    for n in range(count):
        row = {
            "project_id": project_id,
            "memory_type": "learning",
            "execution_summary": f"lesson {n}",
            "success": True,
            "reused_count": 0,
            "learned_at": T0,
            "is_consolidated": n % 100 != 0,
        }
        if row["is_consolidated"]:
            row |= {"tier": TIERS[n % 5], "consolidation_score": (n * 7919 % 1000) / 1000}
        rows.append(row)
    return rows


def _fill(db: DatabaseService) -> uuid.UUID:
    """Two projects of 5,000 and 1,000 memories, analysed; returns the larger one."""
    large, small = Factories(db).projects(2)
    with db.transaction() as session:
        session.execute(
            insert(TaskMemory), _project_rows(large, 5_000) + _project_rows(small, 1_000)
        )
    with db.transaction() as session:
        session.execute(text("ANALYZE"))
    return large


def _page(project_id: uuid.UUID, **listing: Any) -> Bound:
    shape: dict[str, Any] = {"tier": None, "consolidated": None, "order": "score"} | listing
    return memory_store.memories_page(project_id, limit=51, offset=0, **shape)


# --- PostgreSQL: EXPLAIN --------------------------------------------------------------


def _plan_nodes(connection: Connection, bound: Bound) -> list[dict[str, Any]]:
    """Every node of PostgreSQL's plan for `bound`, as run (with its actual rows),
    breadth first."""
    compiled = bound.statement.compile(dialect=connection.dialect)
    parameters = compiled.construct_params(bound.parameters)
    explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled)
    (document,) = connection.exec_driver_sql(explain, parameters).scalar_one()
    nodes, pending = [], [document["Plan"]]
    while pending:
        node = pending.pop(0)
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    return nodes


def _index_scans(nodes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (node["Node Type"], node["Index Name"], node.get("Scan Direction", ""))
        for node in nodes
        if "Index Name" in node
    ]


def _sorts(nodes: list[dict[str, Any]]) -> int:
    return sum(1 for node in nodes if "Sort" in node["Node Type"])


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[tuple[DatabaseService, uuid.UUID]]:
    db = DatabaseService(postgres_url)
    try:
        yield db, _fill(db)
    finally:
        db.dispose()


@pytest.mark.postgres_only
@pytest.mark.parametrize("tier", list(MemoryTier))
def test_postgres_reads_one_tier_by_score_backwards_from_the_ranking_index_unsorted(
    postgres: tuple[DatabaseService, uuid.UUID], tier: MemoryTier
) -> None:
    db, project = postgres
    with db.engine.connect() as connection:
        nodes = _plan_nodes(connection, _page(project, tier=tier))

    assert nodes[0]["Node Type"] == "Limit"
    assert _index_scans(nodes) == [("Index Scan", RANKING, "Backward")]
    assert _sorts(nodes) == 0
    assert [node["Actual Rows"] for node in nodes] == [51, 51]  # nothing read past the page


@pytest.mark.postgres_only
@pytest.mark.parametrize("consolidated", [None, True])
def test_postgres_reads_every_tier_by_score_from_each_tier_s_end_and_sorts_only_those(
    postgres: tuple[DatabaseService, uuid.UUID], consolidated: bool | None
) -> None:
    db, project = postgres
    with db.engine.connect() as connection:
        nodes = _plan_nodes(connection, _page(project, consolidated=consolidated))

    # Hot, warm and cold each read backwards from the end of its range; the memories
    # not tiered yet from theirs (backwards, or, as few as they are here, by a bitmap
    # and a sort of them alone). One sort merges what the parts read: no node handles
    # more than the four parts' 51 rows each.
    scans = _index_scans(nodes)
    assert [name for _, name, _ in scans] == [RANKING] * 4
    assert scans[:3] == [("Index Scan", RANKING, "Backward")] * 3
    assert max(node["Actual Rows"] for node in nodes) <= 4 * 51
    assert nodes[0]["Actual Rows"] == 51


@pytest.mark.postgres_only
@pytest.mark.parametrize("tier", [None, MemoryTier.HOT])
def test_postgres_reads_unconsolidated_memories_from_the_backlog_s_partial_index(
    postgres: tuple[DatabaseService, uuid.UUID], tier: MemoryTier | None
) -> None:
    db, project = postgres
    with db.engine.connect() as connection:
        nodes = _plan_nodes(connection, _page(project, tier=tier, consolidated=False))

    assert [name for _, name, _ in _index_scans(nodes)] == [BACKLOG]


# --- SQLite: EXPLAIN QUERY PLAN -------------------------------------------------------


@pytest.fixture
def sqlite(
    migrated_sqlite_template: Path, tmp_path: Path
) -> Iterator[tuple[DatabaseService, uuid.UUID]]:
    path = tmp_path / "plans.db"
    shutil.copy(migrated_sqlite_template, path)
    db = DatabaseService(f"sqlite:///{path}")
    try:
        yield db, _fill(db)
    finally:
        db.dispose()


def _query_plan(connection: Connection, bound: Bound) -> list[str]:
    compiled = bound.statement.compile(dialect=connection.dialect)
    parameters = compiled.construct_params(bound.parameters)
    # The values as SQLite's driver takes them (a UUID is stored as its 32 hex digits).
    values = tuple(
        value.hex if isinstance(value, uuid.UUID) else value
        for value in (parameters[name] for name in compiled.positiontup or ())
    )
    rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), values)
    return [str(row[3]) for row in rows]


def test_sqlite_reads_one_tier_by_score_from_the_ranking_index_unsorted(
    sqlite: tuple[DatabaseService, uuid.UUID],
) -> None:
    db, project = sqlite
    with db.engine.connect() as connection:
        plan = _query_plan(connection, _page(project, tier=MemoryTier.HOT))

    assert plan == [f"SEARCH task_memories USING INDEX {RANKING} (project_id=? AND tier=?)"]


def test_sqlite_reads_every_tier_by_score_from_each_tier_s_range(
    sqlite: tuple[DatabaseService, uuid.UUID],
) -> None:
    db, project = sqlite
    with db.engine.connect() as connection:
        plan = _query_plan(connection, _page(project))

    searches = [line for line in plan if line.startswith("SEARCH")]
    assert searches == [f"SEARCH task_memories USING INDEX {RANKING} (project_id=? AND tier=?)"] * 4
    assert plan.count("USE TEMP B-TREE FOR ORDER BY") == 1
