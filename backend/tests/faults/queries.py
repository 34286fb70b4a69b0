"""What every fault test shares: plain SQL against the test database (outside the
code under test), the environment of an `omoi-os serve` replica, and the one
consistency check every fault must leave true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from omoi_os.testing import libpq_url
from tests.support.servers import cli_env

TOKEN = "fault-suite-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def execute(url: str, sql: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return query(url, sql, params)[0][0]


def replica_env(tmp_path: Path, url: str, **settings: str) -> dict[str, str]:
    values = {"database_url": url, "api_tokens": f"fault:{TOKEN}", "worker_poll_interval": "0.2"}
    return cli_env(tmp_path, **(values | settings))


def orphans(url: str) -> tuple[int, int]:
    """(jobs without a queue row, queue rows without a job): both must stay 0."""
    jobs_alone = scalar(
        url,
        """
        SELECT count(*) FROM consolidation_jobs j WHERE NOT EXISTS (
          SELECT 1 FROM task_queue q WHERE q.task_type = 'consolidation'
          AND q.task_id = j.id::text)""",
    )
    rows_alone = scalar(
        url,
        """
        SELECT count(*) FROM task_queue q WHERE q.task_type = 'consolidation' AND NOT EXISTS (
          SELECT 1 FROM consolidation_jobs j WHERE j.id::text = q.task_id)""",
    )
    return int(jobs_alone), int(rows_alone)
