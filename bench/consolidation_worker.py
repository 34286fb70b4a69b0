"""The worker on PostgreSQL: consolidation throughput, peak memory, and how soon a
threshold crossing's job starts.

Throughput: one job consolidating 100,000 memories of one project (batches of 1,000,
each committed), in a fresh child process so that peak RSS is the run's alone.
Baseline, measured in the same run: the obvious ORM version — load every memory as
an object, set its score, tier and flags, commit once.

Latency: from just before the memory write that crosses the threshold to the job's
`started_at`, with the worker woken by NOTIFY, and beside it the same with NOTIFY
off (polling every second).

Targets: at least 20,000 memories/s with peak RSS under 300 MB; median latency under
100 ms with NOTIFY.

    python -m bench.consolidation_worker
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bench.common import machine, peak_rss_mb, scratch_database, sql, verdict
from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import ConsolidationJob, MemoryType, TaskMemory
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.services.consolidation.scoring import (
    TierCutoffs,
    age_in_days,
    tier_for,
    value_score,
)
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, NewMemory
from omoi_os.services.task_queue import TaskQueueService

MEMORIES = 100_000
LATENCY_TRIALS = 25
THRESHOLD = 10


def _load_memories(url: str) -> uuid.UUID:
    project = uuid.uuid4()
    sql(url, "TRUNCATE projects, consolidation_jobs, task_queue, task_memories CASCADE")
    sql(
        url,
        "INSERT INTO projects (id, name, is_active, created_at) VALUES (%s, 'bench', true, now())",
        (project,),
    )
    sql(
        url,
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated) "
        "SELECT %s, (ARRAY['error_fix','discovery','decision','learning','warning',"
        "'codebase_knowledge'])[1 + n %% 6], 'lesson ' || n, n %% 3 > 0, n %% 50, "
        "now() - (n %% 400) * interval '1 day', false FROM generate_series(1, %s) n",
        (project, MEMORIES),
    )
    sql(url, "VACUUM ANALYZE")
    return project


def _ours(url: str, project: uuid.UUID) -> float:
    db = DatabaseService(url)
    settings = AppSettings(database_url=url)
    job_id = ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(project)
    worker = ConsolidationRuntime(settings, engine=db.engine).worker
    started = time.perf_counter()
    worker.run_once()
    seconds = time.perf_counter() - started
    with db.get_session() as session:
        job = session.get(ConsolidationJob, job_id)
        assert job is not None and job.result is not None
        assert job.result["memories_consolidated"] == MEMORIES, job.result
    return seconds


def _orm_baseline(url: str, project: uuid.UUID) -> float:
    """Every memory as an ORM object, updated in Python, one commit."""
    db = DatabaseService(url)
    started = time.perf_counter()
    now = datetime.now(UTC)
    with db.transaction() as session:
        memories = session.scalars(select(TaskMemory).where(TaskMemory.project_id == project)).all()
        ages = [age_in_days(m.learned_at, now) for m in memories]
        scores = [
            value_score(
                memory_type=m.memory_type,
                reused_count=m.reused_count,
                age_days=age,
                success=m.success,
            )
            for m, age in zip(memories, ages, strict=True)
        ]
        cutoffs = TierCutoffs.from_scores(scores)
        for memory, age, score in zip(memories, ages, scores, strict=True):
            memory.consolidation_score = score
            memory.tier = tier_for(age, score, cutoffs)
            memory.is_consolidated = True
            memory.consolidated_at = now
    return time.perf_counter() - started


def _child(kind: str, url: str, project: str) -> None:
    run = _ours if kind == "ours" else _orm_baseline
    seconds = run(url, uuid.UUID(project))
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def _run_child(kind: str, url: str, project: uuid.UUID) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.consolidation_worker", "--child", kind, url, str(project)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


class PollingWorker(ConsolidationWorker):
    """The worker with NOTIFY off: it finds new tasks by polling only."""

    def _make_listener(self) -> None:
        return None


def _latencies(url: str, *, listen: bool) -> list[float]:
    """Milliseconds from a crossing write to its job's start, LATENCY_TRIALS times."""
    db = DatabaseService(url)
    settings = AppSettings(
        database_url=url,
        consolidation_threshold=THRESHOLD,
        consolidation_cooldown=0,
        worker_poll_interval=1.0,
    )
    memories = MemoryService(db, ConsolidationTriggerService(db, settings=settings))
    worker = (ConsolidationWorker if listen else PollingWorker)(
        db,
        settings=settings,
        queue=TaskQueueService(lease=timedelta(seconds=settings.worker_lease_seconds)),
        metrics=ConsolidationMetrics(),
    )
    worker.start()
    assert worker.wait_listening(5)
    note = NewMemory(memory_type=MemoryType.LEARNING, execution_summary="lesson")
    samples = []
    try:
        for _ in range(LATENCY_TRIALS):
            project = uuid.uuid4()
            sql(
                url,
                "INSERT INTO projects (id, name, is_active, created_at) "
                "VALUES (%s, 'latency', true, now())",
                (project,),
            )
            for _ in range(THRESHOLD - 1):
                memories.create_memory_sync(project, note)
            time.sleep(0.3)  # the worker is idle, waiting
            before = datetime.now(UTC)
            job_id = memories.create_memory_sync(project, note).triggered_job_id
            assert job_id is not None
            samples.append(_started_after(db, job_id, before))
    finally:
        worker.stop()
        db.dispose()
    return samples


def _started_after(db: DatabaseService, job_id: int, before: datetime) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db.get_session() as session:
            job = session.get(ConsolidationJob, job_id)
            if job is not None and job.started_at is not None:
                return (job.started_at - before).total_seconds() * 1000
        time.sleep(0.005)
    raise AssertionError(f"job {job_id} did not start")


def main() -> None:
    print(f"consolidation worker benchmark — {machine()}")
    with scratch_database("omoi_bench_worker") as url:
        results = {}
        for kind in ("baseline", "ours"):
            project = _load_memories(url)
            results[kind] = _run_child(kind, url, project)
        notify = _latencies(url, listen=True)
        polling = _latencies(url, listen=False)
    rate = {kind: MEMORIES / result["seconds"] for kind, result in results.items()}
    print(f"{'run':>9} {'seconds':>8} {'memories/s':>11} {'peak RSS MB':>12}")
    for kind, result in results.items():
        print(
            f"{kind:>9} {result['seconds']:>8.2f} {rate[kind]:>11,.0f} "
            f"{result['peak_rss_mb']:>12.0f}"
        )
    ours = results["ours"]
    print(
        f"ours: {rate['ours']:,.0f} memories/s (target >= 20,000): "
        f"{verdict(rate['ours'] >= 20_000)}; {rate['ours'] / rate['baseline']:.1f}x the ORM "
        f"baseline; peak RSS {ours['peak_rss_mb']:.0f} MB (target < 300): "
        f"{verdict(ours['peak_rss_mb'] < 300)}"
    )
    median_notify, median_poll = statistics.median(notify), statistics.median(polling)
    print(
        f"crossing → job started, {LATENCY_TRIALS} trials: NOTIFY median {median_notify:.1f} ms "
        f"(p90 {statistics.quantiles(notify, n=10)[-1]:.1f}); polling every 1 s median "
        f"{median_poll:.1f} ms (p90 {statistics.quantiles(polling, n=10)[-1]:.1f})"
    )
    print(f"NOTIFY median under 100 ms: {verdict(median_notify < 100)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
