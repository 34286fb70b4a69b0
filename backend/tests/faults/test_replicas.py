"""Several replicas on one PostgreSQL: one job per project per tick however many
replicas fire it, and a replica killed in the middle of a tick's fan-out leaves
nothing half written (the restart catches the tick up). Real `omoi-os serve`
processes; run alone with `pytest -m fault`."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from omoi_os.config import AppSettings
from omoi_os.services.database import DatabaseService
from omoi_os.testing import libpq_url
from tests.faults.queries import execute, orphans, query, replica_env, scalar
from tests.support.factories import Factories
from tests.support.polling import wait_for
from tests.support.servers import serve

pytestmark = [pytest.mark.fault, pytest.mark.postgres_only]


def _daily_schedule_minutes_ago(minutes: int) -> str:
    """A daily crontab whose latest tick was `minutes` ago (UTC): caught up at start."""
    tick = datetime.now(UTC) - timedelta(minutes=minutes)
    return f"{tick.minute} {tick.hour} * * *"


# --- 1. replicas ---------------------------------------------------------------------------


def test_three_replicas_three_ticks_one_job_per_project_per_tick(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    projects = Factories(db).projects(300, new_memories=1)
    db.dispose()
    env = replica_env(
        tmp_path, postgres_url, consolidation_schedule="* * * * *", worker_concurrency="2"
    )

    with contextlib.ExitStack() as replicas:
        # A tick passes over a project with nothing to do: once each tick's jobs are
        # done, every project gets a new memory, so every tick has work everywhere.
        replicas.enter_context(_new_memory_after_every_tick(postgres_url))
        for _ in range(3):
            replicas.enter_context(serve(env))
        # The start-up catch-up records the previous minute; two more minutes follow.
        wait_for(
            lambda: scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") >= 3,
            timeout=150,
            what="three ticks",
        )
        wait_for(
            lambda: (
                scalar(
                    postgres_url,
                    "SELECT count(*) FROM consolidation_jobs WHERE status <> 'completed'",
                )
                == 0
            ),
            timeout=60,
            what="every job completed",
        )
        ticks = [
            row[0]
            for row in query(
                postgres_url, "SELECT scheduled_for FROM consolidation_ticks ORDER BY 1"
            )
        ][:3]

    per_project = query(
        postgres_url,
        """
        SELECT project_id, count(*), count(DISTINCT scheduled_for) FROM consolidation_jobs
        WHERE trigger_type = 'scheduled' AND scheduled_for = ANY(%s) GROUP BY project_id""",
        (ticks,),
    )
    assert len(per_project) == 300
    assert {str(row[0]) for row in per_project} == {str(p) for p in projects}
    assert {(row[1], row[2]) for row in per_project} == {(3, 3)}  # none doubled or missing
    runs = query(
        postgres_url,
        """
        SELECT q.state, q.attempts, count(*) FROM task_queue q JOIN consolidation_jobs j
        ON q.task_id = j.id::text WHERE j.scheduled_for = ANY(%s) GROUP BY 1, 2""",
        (ticks,),
    )
    assert runs == [("done", 1, 900)]  # every job claimed and run exactly once
    assert orphans(postgres_url) == (0, 0)


# --- 2. a replica killed in the middle of a tick's fan-out ---------------------------------------


def test_a_replica_killed_mid_fan_out_leaves_nothing_half_written(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    projects = sorted(Factories(db).projects(20_000, new_memories=1))
    db.dispose()
    env = replica_env(
        tmp_path,
        postgres_url,
        worker_enabled="false",
        consolidation_schedule=_daily_schedule_minutes_ago(5),
    )
    tick = _latest_tick(env)
    # Hold the last project's job for this tick in an open transaction: the fan-out
    # (in project order) writes 19,999 rows and then waits on this one — mid-write.
    with psycopg.connect(libpq_url(postgres_url)) as blocker:
        blocker.execute(
            "INSERT INTO consolidation_jobs (project_id, trigger_type, scope, status,"
            " triggered_by, scheduled_for, created_at) VALUES (%s, 'scheduled', '{}',"
            " 'completed', 'blocker', %s, now())",
            (projects[-1], tick),
        )
        with serve(env, check_exit=False) as victim:
            wait_for(
                lambda: _fan_out_waiting(postgres_url),
                timeout=30,
                what="the fan-out waiting on the last project",
            )
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(10)
        blocker.rollback()

    assert victim.process.returncode == -signal.SIGKILL
    assert scalar(postgres_url, "SELECT count(*) FROM consolidation_jobs") == 0
    assert scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") == 0
    assert scalar(postgres_url, "SELECT count(*) FROM task_queue") == 0

    with serve(env):  # the restart catches the tick up
        wait_for(
            lambda: scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") == 1,
            timeout=30,
            what="the tick caught up",
        )
    per_project = query(
        postgres_url,
        "SELECT count(*) FROM consolidation_jobs WHERE scheduled_for = %s GROUP BY project_id",
        (tick,),
    )
    assert len(per_project) == 20_000
    assert {row[0] for row in per_project} == {1}
    assert orphans(postgres_url) == (0, 0)


@contextlib.contextmanager
def _new_memory_after_every_tick(url: str) -> Iterator[None]:
    stop = threading.Event()

    def feed() -> None:
        fed = 0
        while not stop.wait(0.2):
            ticks = scalar(url, "SELECT count(*) FROM consolidation_ticks")
            active = scalar(
                url,
                "SELECT count(*) FROM consolidation_jobs WHERE status IN ('pending', 'running')",
            )
            if ticks > fed and active == 0:
                fed = ticks
                execute(
                    url,
                    "INSERT INTO task_memories (project_id, memory_type, execution_summary,"
                    " success, reused_count, learned_at, is_consolidated)"
                    " SELECT id, 'learning', 'after a tick', true, 0, now(), false FROM projects",
                )

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join(10)


def _latest_tick(env: dict[str, str]) -> datetime:
    settings = AppSettings(
        consolidation_schedule=env["OMOI_CONSOLIDATION_SCHEDULE"], database_url="sqlite://"
    )
    tick = settings.schedule.latest_tick(datetime.now(UTC))
    assert tick is not None
    return tick


def _fan_out_waiting(url: str) -> bool:
    return bool(
        scalar(
            url,
            """
        SELECT count(*) FROM pg_stat_activity WHERE application_name = 'omoi-os'
        AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO consolidation_jobs%%'""",
        )
    )
