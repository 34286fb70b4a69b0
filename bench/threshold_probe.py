"""Threshold check cost against the backlog, on PostgreSQL.

Ours: the threshold trigger's probe (active job, last finish, and a count that stops
at the threshold, one statement) and the whole `check_threshold_triggers_sync` as a
memory write runs it. Baseline, measured in the same run: the customer's sketch, a
`COUNT(*)` over every unconsolidated memory of the project.

Targets: ours at 1,000,000 within 1.5x of ours at 1,000; the baseline at
1,000,000 at least 100x slower than ours.

    python -m bench.threshold_probe
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from bench.common import machine, median_ms, scratch_database, sql, verdict
from omoi_os.config import AppSettings
from omoi_os.models import TaskMemory
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.triggers import threshold
from omoi_os.services.database import DatabaseService

BACKLOGS = (1_000, 10_000, 100_000, 1_000_000)
THRESHOLD = 100
COOLDOWN = 300
REPEATS = 300


def _load(url: str) -> dict[int, uuid.UUID]:
    """One project per backlog size, each with that many unconsolidated memories,
    plus a consolidated history as large as the biggest backlog."""
    projects = {size: uuid.uuid4() for size in BACKLOGS}
    history = uuid.uuid4()
    for project in [*projects.values(), history]:
        sql(
            url,
            "INSERT INTO projects (id, name, is_active, created_at) "
            "VALUES (%s, 'bench', true, now())",
            (project,),
        )
    insert = (
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated) "
        "SELECT %s, 'learning', 'lesson ' || n, true, 0, now(), %s FROM generate_series(1, %s) n"
    )
    for size, project in projects.items():
        sql(url, insert, (project, False, size))
    sql(url, insert, (history, True, max(BACKLOGS)))
    sql(url, "VACUUM ANALYZE")
    return projects


def _baseline_count(db: DatabaseService, project: uuid.UUID) -> int:
    """The sketch's check: count every unconsolidated memory of the project."""
    with db.get_session() as session:
        statement = select(func.count()).where(
            TaskMemory.project_id == project, TaskMemory.is_consolidated.is_(False)
        )
        return session.scalar(statement) or 0


def _probe(db: DatabaseService, project: uuid.UUID) -> object:
    """The probe statement alone, in its own transaction, as the check runs it."""
    with db.transaction() as session:
        params = {"project_id": project, "threshold": THRESHOLD, "cooldown": COOLDOWN}
        return session.connection().execute(threshold.PROBE, params).one()


def main() -> None:
    print(f"threshold probe benchmark — {machine()}")
    with scratch_database("omoi_bench_threshold") as url:
        projects = _load(url)
        db = DatabaseService(url)
        settings = AppSettings(database_url=url, consolidation_threshold=THRESHOLD)
        triggers = ConsolidationTriggerService(db, settings=settings)
        print(f"{'backlog':>10} {'probe ms':>10} {'check ms':>10} {'COUNT(*) ms':>12} {'ratio':>8}")
        probes, counts = {}, {}
        for size, project in projects.items():
            assert _baseline_count(db, project) == size
            # The first check creates the project's job; later ones (every write while
            # that job is pending) pay the same probe and then skip.
            triggers.check_threshold_triggers_sync(project)
            probes[size] = median_ms(lambda p=project: _probe(db, p), REPEATS)
            check = median_ms(lambda p=project: triggers.check_threshold_triggers_sync(p), REPEATS)
            counts[size] = median_ms(lambda p=project: _baseline_count(db, p), 30, warmup=2)
            ratio = counts[size] / probes[size]
            print(
                f"{size:>10,} {probes[size]:>10.3f} {check:>10.3f} {counts[size]:>12.3f} "
                f"{ratio:>7.0f}x"
            )
        db.dispose()
    flat = probes[max(BACKLOGS)] / probes[min(BACKLOGS)]
    speedup = counts[max(BACKLOGS)] / probes[max(BACKLOGS)]
    print(f"probe at 1M / probe at 1k = {flat:.2f} (target <= 1.5): {verdict(flat <= 1.5)}")
    print(
        f"COUNT(*) at 1M / probe at 1M = {speedup:.0f}x (target >= 100x): {verdict(speedup >= 100)}"
    )


if __name__ == "__main__":
    main()
