"""Reading what consolidation decided: a project's top 50 hot memories, on PostgreSQL.

Ours: `MemoryService.list_sync(project, tier=HOT, order="score", limit=50)`, the call
behind `GET /api/v1/projects/{id}/memories?tier=hot&order=score`, from a project of
1,000 memories and from one of 1,000,000 (each consolidated: a tenth hot, the rest
warm and cold), and the same page over every tier. Baseline, measured in the same
run: the same page written the plain way, `ORDER BY consolidation_score DESC` over
the project's hot rows with nothing to read them in order from (the sort a host's
own query pays without our ranking index).

Target: ours at 1,000,000 within 1.5x of ours at 1,000 (issue 18: "about what it
costs from one of 1,000"), for one tier and for every tier.

    python -m bench.memory_listing
"""

from __future__ import annotations

import uuid

from sqlalchemy import text

from bench.common import machine, median_ms, scratch_database, sql, verdict
from omoi_os.config import AppSettings
from omoi_os.models import MemoryTier
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.services.database import DatabaseService

SIZES = (1_000, 1_000_000)
PAGE = 50
REPEATS = 300

# `+ 0` keeps PostgreSQL from reading the ranking index in order: it must sort.
PLAIN_PAGE = text(
    "SELECT id, consolidation_score FROM task_memories "
    "WHERE project_id = :project AND tier = 'hot' "
    "ORDER BY consolidation_score + 0 DESC, id DESC LIMIT :limit"
)


def _load(url: str) -> dict[int, uuid.UUID]:
    """One consolidated project per size: scores spread over [0, 1), a tenth hot,
    three tenths warm, the rest cold, as the worker's cut-offs leave them."""
    projects = {size: uuid.uuid4() for size in SIZES}
    for size, project in projects.items():
        sql(
            url,
            "INSERT INTO projects (id, name, is_active, created_at) "
            "VALUES (%s, 'bench', true, now())",
            (project,),
        )
        sql(
            url,
            "INSERT INTO task_memories (project_id, memory_type, execution_summary, success,"
            " reused_count, learned_at, is_consolidated, consolidated_at,"
            " consolidation_job_id, consolidation_score, tier) "
            "SELECT %s, 'learning', 'lesson ' || n, true, 0, now(), true, now(), 1, s,"
            " CASE WHEN s >= 0.9 THEN 'hot' WHEN s >= 0.6 THEN 'warm' ELSE 'cold' END "
            "FROM (SELECT n, random() AS s FROM generate_series(1, %s) n) scored",
            (project, size),
        )
    sql(url, "VACUUM ANALYZE")
    return projects


def _plain(db: DatabaseService, project: uuid.UUID) -> int:
    with db.engine.connect() as connection:
        return len(connection.execute(PLAIN_PAGE, {"project": project, "limit": PAGE}).all())


def main() -> None:
    print(f"memory listing benchmark — {machine()}")
    with scratch_database("omoi_bench_listing") as url:
        projects = _load(url)
        runtime = ConsolidationRuntime(AppSettings(database_url=url))
        memories, db = runtime.memories, runtime.db
        hot, every, plain = {}, {}, {}
        print(f"{'memories':>10} {'hot ms':>8} {'every tier ms':>14} {'plain sort ms':>14}")
        for size, project in projects.items():
            page = memories.list_sync(project, tier=MemoryTier.HOT, limit=PAGE)
            assert len(page.items) == PAGE and all(m.tier == "hot" for m in page.items)
            assert _plain(db, project) == PAGE
            hot[size] = median_ms(
                lambda p=project: memories.list_sync(p, tier=MemoryTier.HOT, limit=PAGE),
                REPEATS,
            )
            every[size] = median_ms(lambda p=project: memories.list_sync(p, limit=PAGE), REPEATS)
            plain[size] = median_ms(lambda p=project: _plain(db, p), 30, warmup=2)
            print(f"{size:>10,} {hot[size]:>8.3f} {every[size]:>14.3f} {plain[size]:>14.3f}")
        runtime.close()
    small, large = min(SIZES), max(SIZES)
    for label, figures in (("hot by score", hot), ("every tier by score", every)):
        ratio = figures[large] / figures[small]
        print(f"{label}, 1M / 1k = {ratio:.2f} (target <= 1.5): {verdict(ratio <= 1.5)}")
    print(f"plain sort at 1M / ours at 1M = {plain[large] / hot[large]:.0f}x")


if __name__ == "__main__":
    main()
