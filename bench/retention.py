"""Retention on PostgreSQL: what a purge of a long history costs, and what it costs
the memory writes that go on meanwhile.

Set-up: `--rows` (1,000,000) done queue tasks and as many finished jobs, all 40+
days old (the jobs spread over `--rows / 100` projects, so each project keeps its
latest), and a few active projects that agents write memories into.

Ours: `Retention.purge()` (batches of 1,000 rows, each its own transaction, with the
library's pause after each; `--pause-ratio 0` purges flat out) in a thread, while the
main thread writes memories the way the app does (`MemoryService.create_memory`: the
write, then the threshold check).
Baseline, measured in the same run: the same writes with no purge running.

Targets: write + check median during the purge within 1.5x of the baseline's, p99
within 3x; no batch longer than 250 ms (a batch is a transaction: its locks are held
that long); at least 5,000 rows/s (a night of a 100,000-project fleet's history, two
rows per job, in well under a minute).

    python -m bench.retention [--rows 1000000] [--writes 2000] [--pause-ratio 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable

from bench.common import machine, scratch_database, sql, verdict
from omoi_os.clock import utc_now
from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import MemoryType
from omoi_os.services.consolidation.retention import PAUSE_RATIO, PurgeSummary, Retention
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, NewMemory

ACTIVE_PROJECTS = 10
JOBS_PER_PROJECT = 100
LESSON = NewMemory(memory_type=MemoryType.LEARNING, execution_summary="retry with backoff")
RESULT = (
    '{"memories_processed": 120, "memories_consolidated": 120, "tiers": '
    '{"hot": 12, "warm": 36, "cold": 72}, "tiers_refreshed": 3, "duration_seconds": 1.4, '
    '"dry_run": false}'
)


def _load(url: str, rows: int) -> list[uuid.UUID]:
    """The old history, set-based; returns the active projects' ids."""
    started = time.perf_counter()
    history_projects = max(1, rows // JOBS_PER_PROJECT)
    sql(
        url,
        "INSERT INTO task_queue (task_type, task_id, payload, state, attempts, max_attempts, "
        "available_at, created_at, finished_at) "
        "SELECT 'consolidation', n::text, '{}', 'done', 1, 5, t, t, t + interval '2 seconds' "
        "FROM generate_series(1, %s) n, "
        "LATERAL (SELECT now() - interval '400 days' + n * interval '1 second' AS t) at",
        (rows,),
    )
    sql(
        url,
        "INSERT INTO projects (id, name, is_active, created_at) "
        "SELECT gen_random_uuid(), 'history ' || k, true, now() - interval '500 days' "
        "FROM generate_series(0, %s - 1) k",
        (history_projects,),
    )
    sql(
        url,
        "INSERT INTO consolidation_jobs (project_id, trigger_type, scope, status, triggered_by, "
        "created_at, claimable_at, started_at, finished_at, result) "
        "SELECT p.id, 'threshold', '{\"unconsolidated_only\": true}', 'completed', "
        "'threshold', t, t, t, t + interval '2 seconds', %s::jsonb "
        "FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM projects) p "
        "JOIN generate_series(0, %s - 1) n ON n %% %s = p.k, "
        "LATERAL (SELECT now() - interval '400 days' + n * interval '1 second' AS t) at",
        (RESULT, rows, history_projects),
    )
    active = [uuid.uuid4() for _ in range(ACTIVE_PROJECTS)]
    for project in active:
        sql(
            url,
            "INSERT INTO projects (id, name, is_active, created_at) "
            "VALUES (%s, 'active', true, now())",
            (project,),
        )
    sql(url, "VACUUM ANALYZE")
    print(
        f"loaded {rows:,} done tasks and {rows:,} finished jobs of {history_projects:,} "
        f"projects in {time.perf_counter() - started:.0f} s"
    )
    return active


def _timed_writes(
    memories: MemoryService, active: list[uuid.UUID], keep_going: Callable[[int], bool]
) -> list[float]:
    """Write memories round-robin over the active projects while keep_going(count);
    each sample is one write plus its threshold check, in milliseconds."""
    samples: list[float] = []
    while keep_going(len(samples)):
        project = active[len(samples) % len(active)]
        started = time.perf_counter()
        memories.create_memory_sync(project, LESSON)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def _purge_beside_writes(
    retention: Retention, memories: MemoryService, active: list[uuid.UUID]
) -> tuple[PurgeSummary, float, list[float]]:
    """Run the purge in a thread; write memories until it ends."""
    outcome: list[PurgeSummary] = []
    done = threading.Event()

    def purge() -> None:
        try:
            outcome.append(retention.purge())
        finally:
            done.set()

    thread = threading.Thread(target=purge, name="bench-purge")
    started = time.perf_counter()
    thread.start()
    samples = _timed_writes(memories, active, lambda _: not done.is_set())
    thread.join()
    return outcome[0], time.perf_counter() - started, samples


def run(url: str, rows: int, writes: int, pause_ratio: float) -> None:
    active = _load(url, rows)
    db = DatabaseService(url)
    settings = AppSettings(database_url=url, consolidation_threshold=1000, retention_days=30)
    metrics = ConsolidationMetrics()
    triggers = ConsolidationTriggerService(db, settings=settings, metrics=metrics)
    memories = MemoryService(db, triggers)
    retention = Retention(
        db, settings=settings, clock=utc_now, metrics=metrics, pause_ratio=pause_ratio
    )
    try:
        _timed_writes(memories, active, lambda count: count < 50)  # warm-up
        alone = _timed_writes(memories, active, lambda count: count < writes)
        summary, elapsed, during = _purge_beside_writes(retention, memories, active)
    finally:
        db.dispose()
    _report(rows, alone, during, summary, elapsed)


def _report(
    rows: int, alone: list[float], during: list[float], summary: PurgeSummary, elapsed: float
) -> None:
    expected_jobs = rows - max(1, rows // JOBS_PER_PROJECT)
    assert summary.deleted["task_queue"] == rows, summary.deleted
    assert summary.deleted["consolidation_jobs"] == expected_jobs, summary.deleted
    median_ratio = statistics.median(during) / statistics.median(alone)
    p99_ratio = _p99(during) / _p99(alone)
    rate = summary.total / elapsed
    longest_ms = summary.longest_batch_seconds * 1000
    print(f"{'write + check, ms':<28} {'median':>8} {'p99':>8} {'samples':>8}")
    for name, samples in (("no purge (baseline)", alone), ("during the purge", during)):
        print(
            f"{name:<28} {statistics.median(samples):>8.3f} {_p99(samples):>8.3f} "
            f"{len(samples):>8,}"
        )
    print(
        f"purge: {summary.total:,} rows ({summary.deleted['task_queue']:,} tasks, "
        f"{summary.deleted['consolidation_jobs']:,} jobs) in {elapsed:.1f} s = {rate:,.0f} rows/s, "
        f"{sum(summary.transactions.values()):,} transactions, longest batch {longest_ms:.1f} ms"
    )
    print(
        f"median during / without = {median_ratio:.2f} (target <= 1.5): "
        f"{verdict(median_ratio <= 1.5)}"
    )
    print(f"p99 during / without = {p99_ratio:.2f} (target <= 3): {verdict(p99_ratio <= 3)}")
    print(f"longest batch {longest_ms:.1f} ms (target <= 250): {verdict(longest_ms <= 250)}")
    print(f"purge rate {rate:,.0f} rows/s (target >= 5,000): {verdict(rate >= 5000)}")


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retention", description="Retention of a long history (issue 11)."
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="old done tasks, and old finished jobs"
    )
    parser.add_argument("--writes", type=int, default=2_000, help="baseline memory writes")
    parser.add_argument(
        "--pause-ratio",
        type=float,
        default=PAUSE_RATIO,
        help="pause after each batch, as a multiple of its duration (the library's default)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Full scale by default (as `make bench` runs it); `argv` or the command line
    scale it down."""
    options = _options(argv)
    print(f"retention benchmark — {machine()}")
    print(f"{options.rows:,} rows of each; pause after each batch: {options.pause_ratio}x its time")
    with scratch_database("omoi_bench_retention") as url:
        run(url, options.rows, options.writes, options.pause_ratio)


if __name__ == "__main__":
    main()
