"""Two replicas whose clocks are 90 s behind and 90 s ahead (libfaketime), on one
PostgreSQL: leases, time-outs, claims and ticks follow the database's clock, so a
150,000-memory job completes in its first attempt and no tick is recorded before its
instant. Real `omoi-os serve` processes; run alone with `pytest -m fault`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from omoi_os.services.database import DatabaseService
from tests.faults.queries import query, replica_env, scalar
from tests.support.factories import Factories
from tests.support.polling import wait_for
from tests.support.servers import Server, serve

pytestmark = [pytest.mark.fault, pytest.mark.postgres_only]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
MEMORIES = 150_000


def _skewed(env: dict[str, str], offset: str) -> dict[str, str]:
    """`env` for a process whose every clock is `offset` ("-90s", "+90s") off."""
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} is missing: install the distribution's faketime package")
    # Only the wall clock: with a faked monotonic clock libfaketime 0.9.10 makes every
    # timed wait of Python's threads (sem_clockwait) hang, whatever the program.
    return env | {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def test_replicas_90_s_apart_agree_on_leases_time_outs_and_ticks(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    project = Factories(db).project().id
    Factories(db).memories(project, MEMORIES)
    db.dispose()
    env = replica_env(
        tmp_path,
        postgres_url,
        consolidation_schedule="* * * * *",
        worker_lease_seconds="30",
        consolidation_timeout="60",
    )

    with contextlib.ExitStack() as stack:
        first_seen = stack.enter_context(_tick_watch(postgres_url))
        slow = stack.enter_context(serve(_skewed(env, "-90s")))
        fast = stack.enter_context(serve(_skewed(env, "+90s")))
        wait_for(
            lambda: _job_statuses(postgres_url) == ["completed"],
            timeout=120,
            what="the 150,000-memory job completed",
        )
        # Two ticks past the catch-up: the replicas' own timers fired.
        wait_for(lambda: len(first_seen) >= 3, timeout=150, what="three ticks recorded")
        healths = [_health(slow), _health(fast)]
        outputs = slow.output() + fast.output()

    attempts, processed = query(
        postgres_url,
        """SELECT q.attempts, (j.result->>'memories_processed')::int
           FROM consolidation_jobs j JOIN task_queue q ON q.task_id = j.id::text""",
    )[0]
    assert (attempts, processed) == (1, MEMORIES)  # one attempt: no lease taken over
    assert "timed_out" not in outputs and "taken over" not in outputs
    for tick, seen in first_seen.items():
        # Seen at most a poll later than recorded: never before its instant.
        assert seen >= tick - timedelta(seconds=1), (tick, seen)
    ticks = [row[0] for row in query(postgres_url, "SELECT scheduled_for FROM consolidation_ticks")]
    assert len(ticks) == len(set(ticks))
    assert [(h["clock"], round(h["clock_skew_seconds"])) for h in healths] == [
        ("skewed", 90),  # the database's time minus the slow machine's
        ("skewed", -90),
    ]
    assert outputs.count("clock is -90.0 s off the database's") == 1
    assert outputs.count("clock is +90.0 s off the database's") == 1


def _job_statuses(url: str) -> list[str]:
    return [row[0] for row in query(url, "SELECT status FROM consolidation_jobs")]


def _health(server: Server) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{server.base_url}/healthz", timeout=5).json()
    return body


@contextlib.contextmanager
def _tick_watch(url: str) -> Iterator[dict[datetime, datetime]]:
    """Each tick's instant and the database's time when a poll first saw its record."""
    first_seen: dict[datetime, datetime] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            now = scalar(url, "SELECT clock_timestamp()")
            for (tick,) in query(url, "SELECT scheduled_for FROM consolidation_ticks"):
                first_seen.setdefault(tick, now)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield first_seen
    finally:
        done.set()
        watcher.join(timeout=5)
