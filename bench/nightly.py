"""The nightly run at fleet scale (issue 10), on PostgreSQL: one scheduled tick over
a large, mostly idle fleet and the drain of what it queued, the cost of one job
against a bare queue loop, a deep queue, and the threshold check's share of a write.

1. Fleet tick + drain. N active projects (default 100,000): 1% with 50 new memories
   each, the other 99% idle (three memories, all consolidated a few days ago). In a
   fresh child process: one `run_scheduled_tick`, then the ConsolidationWorker at
   concurrency 2 until no job is pending or running (capped; if the cap is hit, the
   jobs finished so far are reported). Printed: tick seconds, jobs and queue rows
   created, those of idle projects, drain and total seconds, the child's peak RSS.
   Targets: no job and no queue row for an idle project; total under 30 s; peak RSS
   under 300 MB.
2. Per-job cost. 2,000 projects with one new memory each, one tick, then
   `run_once()` in a loop in one thread until nothing is claimable (only the drain
   is timed). Baseline, measured in the same run on an identical fresh data set and
   queue: a bare psycopg loop doing per job what any queue must — transaction 1
   claims the oldest task (`FOR UPDATE SKIP LOCKED`) and marks it claimed and its
   job running, transaction 2 marks the job completed and the task done.
   Target: ours at least 0.5x the bare loop's jobs/s.
3. Deep queue. 20,000 projects with one new memory each (20,000 jobs after the
   tick), drained at concurrency 2: target at most 120 s. And one
   `TaskQueueService.claim` (rolled back, so the queue is unchanged) with 100,000
   tasks queued against 1,000 queued: target a median ratio of at most 1.5. The
   queue is measured as a tick leaves it (every task available at one instant) and
   spread out in time (tasks 1 ms apart).
4. Threshold check share. One memory write alone against the write followed by the
   threshold check (the check also timed alone), interleaved, medians of 300 each;
   share = check / (write + check): target under 50%. Default settings (threshold
   100): the backlog crosses it early, so most checks find the job that crossing
   queued still pending, as on a busy project between drains.

Every measured run is a fresh child process, so its peak RSS is its own. The data
sets are built set-based in SQL and vacuumed before each run. The library is used
only through the adapter functions at the top of this file.

    python -m bench.nightly                                  # full scale, ~7 min
    python -m bench.nightly --projects 5000 --small 500 --deep 2000   # quick
    python -m bench.nightly --only perjob,claim
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import machine, median_ms, peak_rss_mb, scratch_database, sql, verdict
from omoi_os import testing
from omoi_os.config import AppSettings
from omoi_os.models import MemoryType
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store.memories import insert_memory

TICK = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
TASK_TYPE = "consolidation"  # the queue's task_type of a consolidation job
SECTIONS = ("tick", "perjob", "deep", "claim", "threshold")
CLAIM_DEPTHS = (1_000, 100_000)
# How a queue's tasks are spread in time. A tick's fan-out makes every task available
# at the same instant, so the claim's ORDER BY available_at, id cannot stop early on
# available_at alone; tasks queued one by one differ in it.
QUEUE_SHAPES = {
    "as one tick queues them (same available_at)": timedelta(0),
    "spread out (1 ms apart)": timedelta(milliseconds=1),
}
DRAIN_POLL_S = 0.05  # how often a drain looks for jobs left: the error of its seconds
WORKER_POLL_S = 0.1  # short, so that no idle wait holds up the last jobs of a drain


# --- the library, only through these adapters ----------------------------------------


def _settings(url: str, *, concurrency: int = 1) -> AppSettings:
    return AppSettings(
        database_url=url, worker_concurrency=concurrency, worker_poll_interval=WORKER_POLL_S
    )


def _database(settings: AppSettings) -> DatabaseService:
    return DatabaseService(settings.database_url, settings=settings)


def _run_tick(db: DatabaseService, settings: AppSettings) -> int:
    """One scheduled tick; returns how many jobs it created."""
    return ConsolidationTriggerService(db, settings=settings).run_scheduled_tick_sync(TICK).created


def _worker(db: DatabaseService, settings: AppSettings) -> ConsolidationWorker:
    """The project's worker: start()/stop() run `worker_concurrency` threads;
    run_once() claims and runs one job, False when nothing was claimable."""
    return ConsolidationRuntime(settings, engine=db.engine).worker


def _rolled_back_claim(db: DatabaseService) -> Callable[[], int]:
    """A call that claims one queued consolidation task and rolls back, leaving the
    queue as it was; it returns how many tasks the claim got."""
    queue = TaskQueueService()

    def claim() -> int:
        with db.get_session() as session:
            claimed = queue.claim(session=session, task_types=[TASK_TYPE], worker_id="bench")
            session.rollback()
        return len(claimed)

    return claim


def _memory_write(db: DatabaseService, project: uuid.UUID) -> Callable[[], object]:
    """A call that commits one new memory of `project` (no threshold check)."""

    def write() -> object:
        with db.transaction() as session:
            return insert_memory(
                session,
                project_id=project,
                memory_type=MemoryType.LEARNING,
                execution_summary="lesson",
                success=True,
                reused_count=0,
                learned_at=datetime.now(UTC),
            )

    return write


def _threshold_check(
    db: DatabaseService, settings: AppSettings, project: uuid.UUID
) -> Callable[[], object]:
    """A call that runs the threshold check a memory write of `project` is followed by."""
    triggers = ConsolidationTriggerService(db, settings=settings)
    return lambda: triggers.check_threshold_triggers_sync(project)


def _libpq(url: str) -> str:
    return testing.libpq_url(url)


# --- data sets, set-based in SQL --------------------------------------------------------

MEMORY_TYPES = "ARRAY['error_fix','discovery','decision','learning','warning','codebase_knowledge']"


def _reset(url: str) -> None:
    # RESTART IDENTITY: two loads of the same data set get the same job and task ids.
    sql(
        url,
        "TRUNCATE projects, consolidation_jobs, consolidation_ticks, task_queue, "
        "task_memories RESTART IDENTITY CASCADE",
    )


def _load_fleet(url: str, projects: int, *, busy_every: int, new: int, history: int) -> None:
    """`projects` active projects; every `busy_every`-th is busy ('busy-<n>', `new`
    unconsolidated memories), the rest idle ('idle-<n>', `history` memories that an
    earlier night consolidated). The name is how the report tells idle from busy."""
    _reset(url)
    sql(
        url,
        "INSERT INTO projects (id, name, is_active, created_at) "
        "SELECT gen_random_uuid(), "
        "CASE WHEN mod(n, %s) = 0 THEN 'busy-' ELSE 'idle-' END || n, true, now() "
        "FROM generate_series(1, %s) n",
        (busy_every, projects),
    )
    sql(
        url,
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated) "
        f"SELECT p.id, ({MEMORY_TYPES})[1 + mod(k, 6)], 'new lesson ' || k, mod(k, 3) > 0, "
        "mod(k, 5), now() - mod(k, 10) * interval '1 hour', false "
        "FROM projects p CROSS JOIN generate_series(1, %s) k WHERE starts_with(p.name, 'busy-')",
        (new,),
    )
    # Learned 1, 5, 9 … days ago and consolidated an hour after: the fleet's history,
    # hot by age until 30 days after it was learned (nothing for tonight to change).
    sql(
        url,
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated, consolidated_at, consolidation_score, tier, "
        "tier_expires_at) "
        f"SELECT p.id, ({MEMORY_TYPES})[1 + mod(k, 6)], 'old lesson ' || k, true, mod(k, 5), "
        "now() - (1 + 4 * mod(k - 1, 3)) * interval '1 day', true, "
        "now() - (1 + 4 * mod(k - 1, 3)) * interval '1 day' + interval '1 hour', "
        "0.5, 'hot', now() - (1 + 4 * mod(k - 1, 3)) * interval '1 day' + interval '30 days' "
        "FROM projects p CROSS JOIN generate_series(1, %s) k WHERE starts_with(p.name, 'idle-')",
        (history,),
    )
    sql(url, "VACUUM ANALYZE")


def _load_queue(url: str, first: int, last: int, *, apart: timedelta) -> None:
    """Queued consolidation tasks numbered first..last, all claimable: available from
    an hour before TICK on, `apart` from one another."""
    sql(
        url,
        "INSERT INTO task_queue (task_type, task_id, payload, state, attempts, max_attempts, "
        "available_at, created_at) "
        "SELECT %s, n::text, '{}', 'queued', 0, 5, %s + n * %s, now() "
        "FROM generate_series(%s::int, %s::int) n",
        (TASK_TYPE, TICK - timedelta(hours=1), apart, first, last),
    )
    sql(url, "VACUUM ANALYZE task_queue")


def _load_threshold_project(url: str, history: int) -> uuid.UUID:
    """One project with `history` consolidated memories and no backlog."""
    _reset(url)
    project = uuid.uuid4()
    sql(
        url,
        "INSERT INTO projects (id, name, is_active, created_at) VALUES (%s, 'busy-1', true, now())",
        (project,),
    )
    sql(
        url,
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated, consolidated_at, tier) "
        "SELECT %s, 'learning', 'old lesson ' || k, true, 0, now() - interval '2 days', true, "
        "now() - interval '1 day', 'warm' FROM generate_series(1, %s) k",
        (project, history),
    )
    sql(url, "VACUUM ANALYZE")
    return project


@dataclass(frozen=True)
class Counts:
    jobs: int
    queue_rows: int
    finished: int  # jobs in a final state (neither pending nor running)
    idle_jobs: int
    idle_queue_rows: int


def _counts(url: str) -> Counts:
    with psycopg.connect(_libpq(url)) as conn:
        jobs, finished, idle_jobs = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE j.status NOT IN ('pending', 'running')), "
            "count(*) FILTER (WHERE starts_with(p.name, 'idle-')) "
            "FROM consolidation_jobs j JOIN projects p ON p.id = j.project_id"
        ).fetchone() or (0, 0, 0)
        queue_rows, idle_queue_rows = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE starts_with(p.name, 'idle-')) "
            "FROM task_queue t LEFT JOIN consolidation_jobs j ON j.id = t.task_id::bigint "
            "LEFT JOIN projects p ON p.id = j.project_id WHERE t.task_type = %s",
            (TASK_TYPE,),
        ).fetchone() or (0, 0)
    return Counts(jobs, queue_rows, finished, idle_jobs, idle_queue_rows)


# --- what the child processes measure ----------------------------------------------------


def _active_jobs_remain(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM consolidation_jobs WHERE status IN ('pending', 'running'))"
    ).fetchone()
    return bool(row and row[0])


def _finished_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM consolidation_jobs WHERE status NOT IN ('pending', 'running')"
    ).fetchone()
    return int(row[0]) if row else 0


def _drain_with_threads(
    db: DatabaseService, settings: AppSettings, timeout: float
) -> tuple[float, int]:
    """Run the worker's threads until no job is pending or running, or `timeout` s
    passed; returns the seconds it ran and the jobs finished by then (counted before
    stopping: jobs that end while the threads stop are not the drain's)."""
    worker = _worker(db, settings)
    with psycopg.connect(_libpq(settings.database_url), autocommit=True) as watcher:
        started = time.perf_counter()
        worker.start()
        try:
            while _active_jobs_remain(watcher) and time.perf_counter() - started < timeout:
                time.sleep(DRAIN_POLL_S)
            seconds = time.perf_counter() - started
            return seconds, _finished_jobs(watcher)
        finally:
            worker.stop()


def _tick_and_drain(url: str, args: dict[str, Any]) -> dict[str, float]:
    """Sections 1 and 3: a tick, then the worker's threads until the queue is empty."""
    settings = _settings(url, concurrency=args["concurrency"])
    db = _database(settings)
    started = time.perf_counter()
    created = _run_tick(db, settings)
    tick_seconds = time.perf_counter() - started
    drain_seconds, finished = _drain_with_threads(db, settings, args["timeout"])
    db.dispose()
    return {
        "tick_seconds": tick_seconds,
        "created": created,
        "drain_seconds": drain_seconds,
        "finished": finished,
        "peak_rss_mb": peak_rss_mb(),
    }


def _run_once_loop(url: str, _args: dict[str, Any]) -> dict[str, float]:
    """Section 2, ours: the tick (not timed), then run_once() until nothing is left."""
    settings = _settings(url, concurrency=1)
    db = _database(settings)
    _run_tick(db, settings)
    worker = _worker(db, settings)
    jobs = 0
    started = time.perf_counter()
    while worker.run_once():
        jobs += 1
    seconds = time.perf_counter() - started
    db.dispose()
    return {"jobs": jobs, "seconds": seconds}


# The least any queue-driven job runner does per job, in two transactions.
BARE_CLAIM = (
    "WITH due AS (SELECT id FROM task_queue WHERE task_type = %s AND state = 'queued' "
    "AND available_at <= now() ORDER BY available_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "UPDATE task_queue t SET state = 'claimed', claimed_by = 'bare', "
    "claim_token = md5(random()::text), lease_expires_at = now() + interval '60 seconds', "
    "attempts = t.attempts + 1 FROM due WHERE t.id = due.id RETURNING t.id, t.task_id"
)
BARE_START = (
    "UPDATE consolidation_jobs SET status = 'running', started_at = now() WHERE id = %s::bigint"
)
BARE_FINISH_JOB = (
    "UPDATE consolidation_jobs SET status = 'completed', finished_at = now() WHERE id = %s::bigint"
)
BARE_FINISH_TASK = (
    "UPDATE task_queue SET state = 'done', finished_at = now(), lease_expires_at = NULL "
    "WHERE id = %s"
)


def _bare_loop(url: str, _args: dict[str, Any]) -> dict[str, float]:
    """Section 2, baseline: the same tick, then the bare psycopg loop."""
    settings = _settings(url)
    db = _database(settings)
    _run_tick(db, settings)
    db.dispose()
    jobs = 0
    with psycopg.connect(_libpq(url)) as conn:
        started = time.perf_counter()
        while True:
            with conn.transaction():
                claimed = conn.execute(BARE_CLAIM, (TASK_TYPE,)).fetchone()
                if claimed is None:
                    break
                queue_row, job_id = claimed  # a job's task_id is its id as text
                conn.execute(BARE_START, (job_id,))
            with conn.transaction():
                conn.execute(BARE_FINISH_JOB, (job_id,))
                conn.execute(BARE_FINISH_TASK, (queue_row,))
            jobs += 1
        seconds = time.perf_counter() - started
    return {"jobs": jobs, "seconds": seconds}


def _claim_cost(url: str, args: dict[str, Any]) -> dict[str, float]:
    """Section 3, claim cost: median ms of one rolled-back claim at the current depth."""
    db = _database(_settings(url))
    claim = _rolled_back_claim(db)
    assert claim() == 1, "nothing claimable"
    median = median_ms(claim, args["repeats"])
    db.dispose()
    return {"median_ms": median}


def _threshold_share(url: str, args: dict[str, Any]) -> dict[str, float]:
    """Section 4: a write alone, and a write followed by its check (the check timed on
    its own too), interleaved so that both see the same backlog and the same machine;
    medians in ms. The check is timed directly, not taken as a difference of two
    medians: a commit's fsync varies more than the whole check costs."""
    settings = _settings(url)
    db = _database(settings)
    project = uuid.UUID(args["project"])
    write = _memory_write(db, project)
    check = _threshold_check(db, settings, project)
    alone: list[float] = []
    both: list[float] = []
    checks: list[float] = []
    for attempt in range(args["warmup"] + args["repeats"]):
        started = time.perf_counter()
        write()
        wrote_alone = time.perf_counter()
        write()
        wrote = time.perf_counter()
        check()
        checked = time.perf_counter()
        if attempt >= args["warmup"]:
            alone.append((wrote_alone - started) * 1000)
            both.append((checked - wrote_alone) * 1000)
            checks.append((checked - wrote) * 1000)
    db.dispose()
    return {
        "write_ms": statistics.median(alone),
        "write_check_ms": statistics.median(both),
        "check_ms": statistics.median(checks),
    }


CHILDREN: dict[str, Callable[[str, dict[str, Any]], dict[str, float]]] = {
    "tick_and_drain": _tick_and_drain,
    "run_once_loop": _run_once_loop,
    "bare_loop": _bare_loop,
    "claim_cost": _claim_cost,
    "threshold_share": _threshold_share,
}


def _child(kind: str, url: str, args: str) -> None:
    print(json.dumps(CHILDREN[kind](url, json.loads(args))))


def _run_child(kind: str, url: str, **args: Any) -> dict[str, float]:
    """Run one measurement in a fresh process (its stderr, e.g. warnings, passes through)."""
    output = subprocess.run(
        [sys.executable, "-m", "bench.nightly", "--child", kind, url, json.dumps(args)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


# --- the sections ------------------------------------------------------------------------


def _drain_line(result: dict[str, float], timeout: float, jobs: int) -> str:
    drained, finished = result["drain_seconds"], int(result["finished"])
    rate = finished / drained if drained else 0.0
    if finished < jobs:
        projected = jobs / rate if rate else float("inf")
        return (
            f"{drained:.2f} s — capped at {timeout:.0f} s: {finished:,} of {jobs:,} jobs "
            f"finished ({rate:,.1f} jobs/s; all would take ~{projected:,.0f} s)"
        )
    return f"{drained:.2f} s ({finished:,} jobs, {rate:,.1f} jobs/s)"


def fleet_tick(url: str, projects: int, timeout: float) -> None:
    busy = projects // 100
    print(
        f"1. fleet tick + drain: {projects:,} active projects, {busy:,} with 50 new memories, "
        f"{projects - busy:,} idle (3 consolidated memories each); concurrency 2"
    )
    _load_fleet(url, projects, busy_every=100, new=50, history=3)
    result = _run_child("tick_and_drain", url, concurrency=2, timeout=timeout)
    counts = _counts(url)
    total = result["tick_seconds"] + result["drain_seconds"]
    idle_ok = counts.idle_jobs == counts.idle_queue_rows == 0
    print(
        f"   tick {result['tick_seconds']:.2f} s: {int(result['created']):,} jobs, "
        f"{counts.queue_rows:,} queue rows"
    )
    print(
        f"   for idle projects: {counts.idle_jobs:,} jobs, {counts.idle_queue_rows:,} queue rows "
        f"(target 0): {verdict(idle_ok)}"
    )
    print(f"   drain {_drain_line(result, timeout, counts.jobs)}")
    drained = result["finished"] == counts.jobs  # a capped drain is no pass, however quick
    print(f"   total {total:.2f} s (target < 30 s, all drained): {verdict(drained and total < 30)}")
    print(
        f"   peak RSS {result['peak_rss_mb']:.0f} MB (target < 300 MB): "
        f"{verdict(result['peak_rss_mb'] < 300)}"
    )


def per_job(url: str, projects: int) -> None:
    print(f"2. per-job cost: {projects:,} projects with one new memory each, one thread")
    rates = {}
    for kind, child in (("bare", "bare_loop"), ("ours", "run_once_loop")):
        _load_fleet(url, projects, busy_every=1, new=1, history=0)
        result = _run_child(child, url)
        counts = _counts(url)
        assert result["jobs"] == counts.jobs == counts.finished == projects, (kind, result, counts)
        rates[kind] = result["jobs"] / result["seconds"]
        print(
            f"   {kind:>4}: {int(result['jobs']):,} jobs in {result['seconds']:.2f} s, "
            f"{rates[kind]:,.0f} jobs/s ({1000 / rates[kind]:.2f} ms/job)"
        )
    ratio = rates["ours"] / rates["bare"]
    print(f"   ours / bare = {ratio:.2f} (target >= 0.5): {verdict(ratio >= 0.5)}")


def deep_queue(url: str, projects: int, timeout: float) -> None:
    print(f"3a. deep queue: {projects:,} projects with one new memory each; concurrency 2")
    _load_fleet(url, projects, busy_every=1, new=1, history=0)
    result = _run_child("tick_and_drain", url, concurrency=2, timeout=timeout)
    jobs = _counts(url).jobs
    done = result["finished"] == jobs
    print(f"   tick {result['tick_seconds']:.2f} s: {int(result['created']):,} jobs")
    print(f"   drain {_drain_line(result, timeout, jobs)}")
    print(f"   all drained within 120 s: {verdict(done and result['drain_seconds'] <= 120)}")


def claim_depth(url: str, repeats: int) -> None:
    print(f"3b. claim cost vs queue depth: median of {repeats} rolled-back claims")
    for shape, apart in QUEUE_SHAPES.items():
        _reset(url)
        medians = {}
        queued = 0
        for depth in CLAIM_DEPTHS:
            _load_queue(url, queued + 1, depth, apart=apart)
            queued = depth
            medians[depth] = _run_child("claim_cost", url, repeats=repeats)["median_ms"]
        shallow, deep = CLAIM_DEPTHS
        ratio = medians[deep] / medians[shallow]
        print(f"   {shape}:")
        print(
            f"      {shallow:,} queued {medians[shallow]:.3f} ms; {deep:,} queued "
            f"{medians[deep]:.3f} ms; ratio {ratio:.2f} (target <= 1.5): {verdict(ratio <= 1.5)}"
        )


def threshold_share(url: str, repeats: int) -> None:
    print(
        f"4. threshold check share of a memory write: medians of {repeats}, interleaved; "
        "default settings (threshold 100)"
    )
    project = _load_threshold_project(url, history=1_000)
    result = _run_child("threshold_share", url, project=str(project), repeats=repeats, warmup=10)
    write, both, check = result["write_ms"], result["write_check_ms"], result["check_ms"]
    share = check / both
    print(
        f"   write alone {write:.3f} ms; write + check {both:.3f} ms, of which check {check:.3f} ms"
    )
    print(
        f"   share = check / (write + check) = {share:.0%} (target < 50%): {verdict(share < 0.5)}"
    )


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.nightly", description="The nightly run at fleet scale (issue 10)."
    )
    parser.add_argument("--projects", type=int, default=100_000, help="fleet size (section 1)")
    parser.add_argument("--small", type=int, default=2_000, help="jobs of section 2")
    parser.add_argument("--deep", type=int, default=20_000, help="jobs of section 3")
    parser.add_argument("--timeout", type=float, default=120, help="cap of each drain, s")
    parser.add_argument("--repeats", type=int, default=300, help="samples of each median")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    options = parser.parse_args(argv)
    options.only = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = set(options.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    return options


def main(argv: list[str] | None = None) -> None:
    """Full scale by default (as `make bench` runs it); `argv` or the command line
    scale it down."""
    options = _options(argv)
    print(f"nightly run at fleet scale benchmark — {machine()}")
    started = time.perf_counter()
    runs: dict[str, Callable[[str], None]] = {
        "tick": lambda url: fleet_tick(url, options.projects, options.timeout),
        "perjob": lambda url: per_job(url, options.small),
        "deep": lambda url: deep_queue(url, options.deep, options.timeout),
        "claim": lambda url: claim_depth(url, options.repeats),
        "threshold": lambda url: threshold_share(url, options.repeats),
    }
    with scratch_database("omoi_bench_nightly") as url:
        for name in SECTIONS:
            if name in options.only:
                runs[name](url)
    print(f"(ran {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
