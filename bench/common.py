"""What the benchmarks share: a throw-away PostgreSQL database, timing and reporting."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import psycopg

from omoi_os import testing
from omoi_os.testing import admin_url, libpq_url

ADMIN_URL = admin_url()


def scratch_database(prefix: str) -> AbstractContextManager[str]:
    """A migrated PostgreSQL database that is dropped afterwards; yields its URL."""
    return testing.scratch_database(prefix)


def sql(url: str, statement: str, params: tuple[object, ...] = ()) -> None:
    """Run one statement outside SQLAlchemy (bulk data set-up, VACUUM)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(statement, params)  # type: ignore[arg-type]


def median_ms(run: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    """Median wall time of `run` in milliseconds."""
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpus = os.cpu_count()
    with psycopg.connect(libpq_url(ADMIN_URL)) as conn:
        server = conn.execute("SHOW server_version").fetchone()
    return (
        f"{platform.node()} · {platform.machine()} · {cpus} CPUs · "
        f"Python {platform.python_version()} · PostgreSQL {server[0] if server else '?'} · "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
