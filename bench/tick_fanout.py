"""A scheduled tick's fan-out on PostgreSQL: time to commit every job and queue row,
peak memory, and how long the event loop stalls meanwhile.

Ours: `run_scheduled_tick` (two INSERT … SELECT statements in one transaction),
called the way the app calls it, off the event loop, while a probe task on the
loop measures how late its 5 ms sleeps wake up.
Baseline, measured in the same run: what the customer's sketch of the service does, an ORM insert
plus flush and an enqueue per project, inside the async scheduler callback (so on
the event loop), committed at the end.

Each measurement runs in a fresh child process, so peak RSS is that run's alone.
Targets: 10,000 projects in under 1 s; 100,000 in under 10 s with peak RSS under
300 MB; the event loop never stalls more than 50 ms.

    python -m bench.tick_fanout
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import func, select

from bench.common import machine, peak_rss_mb, scratch_database, sql, verdict
from omoi_os.config import AppSettings
from omoi_os.models import ConsolidationJob, JobStatus, Project, QueuedTask, TriggerType
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService

TICK = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
PROBE_INTERVAL = 0.005


class LoopLag:
    """Sleeps PROBE_INTERVAL on the loop again and again; records the worst lateness."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._running = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running:
            due = loop.time() + PROBE_INTERVAL
            await asyncio.sleep(PROBE_INTERVAL)
            self.worst = max(self.worst, loop.time() - due)

    def stop(self) -> None:
        self._running = False


def _ours(url: str) -> float:
    db = DatabaseService(url)
    triggers = ConsolidationTriggerService(db, settings=AppSettings(database_url=url))
    started = time.perf_counter()
    triggers.run_scheduled_tick_sync(TICK)
    return time.perf_counter() - started


def _sketch(url: str) -> float:
    """The sketch's fan-out: one ORM insert + flush + enqueue per project."""
    db = DatabaseService(url)
    started = time.perf_counter()
    with db.transaction() as session:
        projects = session.scalars(select(Project).where(Project.is_active)).all()
        for project in projects:
            job = ConsolidationJob(
                project_id=project.id,
                trigger_type=TriggerType.SCHEDULED,
                scope={},
                status=JobStatus.PENDING,
                triggered_by="system",
                created_at=datetime.now(UTC),
            )
            session.add(job)
            session.flush()
            session.add(
                QueuedTask(
                    task_type="consolidation",
                    task_id=str(job.id),
                    payload={"job_id": str(job.id)},
                    available_at=datetime.now(UTC),
                    created_at=datetime.now(UTC),
                )
            )
            session.flush()
    return time.perf_counter() - started


async def _measure(kind: str, url: str) -> dict[str, float]:
    lag = LoopLag()
    probe = asyncio.create_task(lag.run())
    await asyncio.sleep(0.05)
    if kind == "ours":
        seconds = await asyncio.to_thread(_ours, url)
    else:
        seconds = _sketch(url)  # on the loop, as the sketch's async callback does
    await asyncio.sleep(0.05)
    lag.stop()
    await probe
    return {"seconds": seconds, "loop_lag_ms": lag.worst * 1000, "peak_rss_mb": peak_rss_mb()}


def _child(kind: str, url: str) -> None:
    print(json.dumps(asyncio.run(_measure(kind, url))))


def _run_child(kind: str, url: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.tick_fanout", "--child", kind, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def _load_projects(url: str, active: int) -> None:
    sql(
        url, "TRUNCATE projects, consolidation_jobs, consolidation_ticks, task_queue, task_memories"
    )
    sql(
        url,
        "INSERT INTO projects (id, name, is_active, created_at) "
        "SELECT gen_random_uuid(), 'p' || n, n <= %s, now() "
        "FROM generate_series(1, %s) n",
        (active, active + active // 10),
    )
    # One new memory each: a tick passes over projects with nothing to do, and this
    # benchmark measures the write of a job for every active project.
    sql(
        url,
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated) "
        "SELECT id, 'learning', 'lesson', true, 0, now(), false FROM projects",
    )
    sql(url, "VACUUM ANALYZE")


def _committed(url: str) -> tuple[int, int]:
    db = DatabaseService(url)
    with db.get_session() as session:
        jobs = session.scalar(select(func.count()).select_from(ConsolidationJob)) or 0
        rows = session.scalar(select(func.count()).select_from(QueuedTask)) or 0
    db.dispose()
    return jobs, rows


def main() -> None:
    print(f"tick fan-out benchmark — {machine()}")
    print(
        f"{'projects':>9} {'run':>9} {'seconds':>8} {'loop lag ms':>12} {'peak RSS MB':>12} "
        f"{'jobs':>8} {'queue rows':>10}"
    )
    results: dict[tuple[str, int], dict[str, float]] = {}
    with scratch_database("omoi_bench_tick") as url:
        for projects, kinds in ((10_000, ("sketch", "ours")), (100_000, ("ours",))):
            for kind in kinds:
                _load_projects(url, projects)
                result = _run_child(kind, url)
                jobs, rows = _committed(url)
                assert jobs == rows == projects, (kind, projects, jobs, rows)
                results[kind, projects] = result
                print(
                    f"{projects:>9,} {kind:>9} {result['seconds']:>8.3f} "
                    f"{result['loop_lag_ms']:>12.1f} {result['peak_rss_mb']:>12.0f} "
                    f"{jobs:>8,} {rows:>10,}"
                )
    small, large = results["ours", 10_000], results["ours", 100_000]
    baseline = results["sketch", 10_000]
    worst_lag = max(small["loop_lag_ms"], large["loop_lag_ms"])
    print(
        f"10,000 in {small['seconds']:.3f} s (target < 1 s): {verdict(small['seconds'] < 1)}; "
        f"sketch {baseline['seconds']:.2f} s, {baseline['seconds'] / small['seconds']:.0f}x slower"
    )
    print(
        f"100,000 in {large['seconds']:.2f} s (target < 10 s): {verdict(large['seconds'] < 10)}; "
        f"peak RSS {large['peak_rss_mb']:.0f} MB (target < 300): "
        f"{verdict(large['peak_rss_mb'] < 300)}"
    )
    print(
        f"worst event-loop stall {worst_lag:.1f} ms (target <= 50 ms): {verdict(worst_lag <= 50)}; "
        f"sketch on the loop: {baseline['loop_lag_ms']:.0f} ms"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3])
    else:
        main()
