"""Faults on PostgreSQL, against real `omoi-os serve` processes: several replicas,
a replica killed mid-tick, the database cut away and given back, a write storm, and
a deploy in the middle of a job. Each proves design.md's invariants hold through it.
Run alone with `pytest -m fault`; traffic stays on 127.0.0.1."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from omoi_os.config import AppSettings
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService

from .factories import Factories
from .polling import wait_for
from .proxy import TcpProxy
from .servers import Server, cli_env, serve

pytestmark = [pytest.mark.fault, pytest.mark.postgres_only]

TOKEN = "fault-suite-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def _scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return _query(url, sql, params)[0][0]


def _env(tmp_path: Path, url: str, **settings: str) -> dict[str, str]:
    values = {"database_url": url, "api_tokens": f"fault:{TOKEN}", "worker_poll_interval": "0.2"}
    return cli_env(tmp_path, **(values | settings))


def _orphans(url: str) -> tuple[int, int]:
    """(jobs without a queue row, queue rows without a job)."""
    jobs_alone = _scalar(
        url,
        """
        SELECT count(*) FROM consolidation_jobs j WHERE NOT EXISTS (
          SELECT 1 FROM task_queue q WHERE q.task_type = 'consolidation'
          AND q.task_id = j.id::text)""",
    )
    rows_alone = _scalar(
        url,
        """
        SELECT count(*) FROM task_queue q WHERE q.task_type = 'consolidation' AND NOT EXISTS (
          SELECT 1 FROM consolidation_jobs j WHERE j.id::text = q.task_id)""",
    )
    return int(jobs_alone), int(rows_alone)


def _daily_schedule_minutes_ago(minutes: int) -> str:
    """A daily crontab whose latest tick was `minutes` ago (UTC): caught up at start."""
    tick = datetime.now(UTC) - timedelta(minutes=minutes)
    return f"{tick.minute} {tick.hour} * * *"


# --- 1. replicas ---------------------------------------------------------------------------


def test_three_replicas_three_ticks_one_job_per_project_per_tick(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    projects = Factories(db).projects(300)
    db.dispose()
    env = _env(tmp_path, postgres_url, consolidation_schedule="* * * * *", worker_concurrency="2")

    with contextlib.ExitStack() as replicas:
        for _ in range(3):
            replicas.enter_context(serve(env))
        # The start-up catch-up records the previous minute; two more minutes follow.
        wait_for(
            lambda: _scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") >= 3,
            timeout=150,
            what="three ticks",
        )
        wait_for(
            lambda: (
                _scalar(
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
            for row in _query(
                postgres_url, "SELECT scheduled_for FROM consolidation_ticks ORDER BY 1"
            )
        ][:3]

    per_project = _query(
        postgres_url,
        """
        SELECT project_id, count(*), count(DISTINCT scheduled_for) FROM consolidation_jobs
        WHERE trigger_type = 'scheduled' AND scheduled_for = ANY(%s) GROUP BY project_id""",
        (ticks,),
    )
    assert len(per_project) == 300
    assert {str(row[0]) for row in per_project} == {str(p) for p in projects}
    assert {(row[1], row[2]) for row in per_project} == {(3, 3)}  # none doubled or missing
    runs = _query(
        postgres_url,
        """
        SELECT q.state, q.attempts, count(*) FROM task_queue q JOIN consolidation_jobs j
        ON q.task_id = j.id::text WHERE j.scheduled_for = ANY(%s) GROUP BY 1, 2""",
        (ticks,),
    )
    assert runs == [("done", 1, 900)]  # every job claimed and run exactly once
    assert _orphans(postgres_url) == (0, 0)


# --- 2. a replica killed in the middle of a tick's fan-out ---------------------------------------


def test_a_replica_killed_mid_fan_out_leaves_nothing_half_written(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    projects = sorted(Factories(db).projects(20_000))
    db.dispose()
    env = _env(
        tmp_path,
        postgres_url,
        worker_enabled="false",
        consolidation_schedule=_daily_schedule_minutes_ago(5),
    )
    tick = _latest_tick(env)
    # Hold the last project's job for this tick in an open transaction: the fan-out
    # (in project order) writes 19,999 rows and then waits on this one — mid-write.
    blocker = psycopg.connect(_libpq(postgres_url))
    blocker.execute(
        "INSERT INTO consolidation_jobs (project_id, trigger_type, scope, status, triggered_by,"
        " scheduled_for, created_at) VALUES (%s, 'scheduled', '{}', 'completed', 'blocker',"
        " %s, now())",
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
    blocker.close()

    assert victim.process.returncode == -signal.SIGKILL
    assert _scalar(postgres_url, "SELECT count(*) FROM consolidation_jobs") == 0
    assert _scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") == 0
    assert _scalar(postgres_url, "SELECT count(*) FROM task_queue") == 0

    with serve(env):  # the restart catches the tick up
        wait_for(
            lambda: _scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") == 1,
            timeout=30,
            what="the tick caught up",
        )
    per_project = _query(
        postgres_url,
        "SELECT count(*) FROM consolidation_jobs WHERE scheduled_for = %s GROUP BY project_id",
        (tick,),
    )
    assert len(per_project) == 20_000
    assert {row[0] for row in per_project} == {1}
    assert _orphans(postgres_url) == (0, 0)


def _latest_tick(env: dict[str, str]) -> datetime:
    settings = AppSettings(
        consolidation_schedule=env["OMOI_CONSOLIDATION_SCHEDULE"], database_url="sqlite://"
    )
    tick = settings.schedule.latest_tick(datetime.now(UTC))
    assert tick is not None
    return tick


def _fan_out_waiting(url: str) -> bool:
    return bool(
        _scalar(
            url,
            """
        SELECT count(*) FROM pg_stat_activity WHERE application_name = 'omoi-os'
        AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO consolidation_jobs%%'""",
        )
    )


# --- 3. the database goes away and comes back ---------------------------------------------------


def test_a_database_outage_answers_503_and_everything_recovers(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    factories.projects(20)
    db.dispose()
    proxy = TcpProxy(target_port=5432)
    via_proxy = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    # A tick at the next minute boundary, which will fall inside the outage.
    boundary = _next_minute_boundary(at_least=timedelta(seconds=25))
    env = _env(
        tmp_path,
        via_proxy,
        consolidation_threshold="10",
        consolidation_schedule=f"{boundary.minute} {boundary.hour} * * *",
    )
    memory = {"memory_type": "warning", "execution_summary": "disk nearly full"}

    with serve(env) as server, httpx.Client(base_url=server.base_url, headers=AUTH) as client:
        assert (
            client.post(f"/api/v1/projects/{project.id}/memories", json=memory).status_code == 201
        )
        _sleep_until(boundary - timedelta(seconds=8))
        proxy.cut()
        began = time.monotonic()
        during = [
            client.post(f"/api/v1/projects/{project.id}/memories", json=memory, timeout=20)
            for _ in range(3)
        ]
        slowest = time.monotonic() - began
        health = client.get("/healthz", timeout=20)
        _sleep_until(boundary + timedelta(seconds=5))  # the tick passes while cut off
        assert server.process.poll() is None  # still running
        proxy.restore()
        wait_for(lambda: client.get("/healthz").status_code == 200, timeout=30, what="health back")
        after = client.post(f"/api/v1/projects/{project.id}/memories", json=memory)
        wait_for(
            lambda: _scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") == 1,
            timeout=60,
            what="the missed tick run after the outage",
        )
        wait_for(  # the worker, which kept polling through the outage, runs them all
            lambda: (
                _scalar(
                    postgres_url,
                    "SELECT count(*) FROM consolidation_jobs WHERE status = 'completed'",
                )
                == 21
            ),
            timeout=60,
            what="the tick's jobs completed by the worker",
        )
        output = server.output()
    proxy.close()

    assert [r.status_code for r in during] == [503, 503, 503]
    assert during[0].json() == {"detail": "the database is unavailable; retry shortly"}
    assert during[0].headers["Retry-After"] == "5"
    assert slowest < 15  # answered, not hung
    assert (health.status_code, health.json()["database"]) == (503, "unavailable")
    assert after.status_code == 201
    assert _scalar(postgres_url, "SELECT count(*) FROM task_memories") == 2
    tick_jobs = _query(
        postgres_url,
        "SELECT project_id, count(*) FROM consolidation_jobs "
        "WHERE trigger_type = 'scheduled' GROUP BY 1",
    )
    assert len(tick_jobs) == 21 and {row[1] for row in tick_jobs} == {1}
    # The scheduler and the worker saw the outage, said so in one line, and went on.
    assert "consolidation worker: database unavailable" in output
    assert "consolidation run_due_tick: database unavailable" in output
    assert "Traceback" not in output


def _next_minute_boundary(at_least: timedelta) -> datetime:
    boundary = (datetime.now(UTC) + at_least).replace(second=0, microsecond=0)
    return boundary + timedelta(minutes=1)


def _sleep_until(moment: datetime) -> None:
    time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0))


# --- 4. a threshold storm -----------------------------------------------------------------------


def test_a_write_storm_loses_nothing_and_never_doubles_a_job(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    project = Factories(db).project()
    env = _env(
        tmp_path,
        postgres_url,
        consolidation_threshold="100",
        consolidation_cooldown="0",
        worker_concurrency="2",
    )
    stop = threading.Event()
    accepted: list[int] = []
    failures: list[int] = []
    most_active = [0]

    def client_loop(server: Server) -> None:
        body = {"memory_type": "learning", "execution_summary": "storm"}
        with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=30) as client:
            while not stop.is_set():
                status = client.post(
                    f"/api/v1/projects/{project.id}/memories", json=body
                ).status_code
                (accepted if status == 201 else failures).append(status)

    def watch_active() -> None:
        with psycopg.connect(_libpq(postgres_url), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM consolidation_jobs WHERE status IN ('pending', 'running')"
                ).fetchone()
                most_active[0] = max(most_active[0], int(row[0]) if row else 0)
                time.sleep(0.02)

    with serve(env) as server:
        threads = [threading.Thread(target=client_loop, args=(server,)) for _ in range(64)]
        threads.append(threading.Thread(target=watch_active))
        for thread in threads:
            thread.start()
        time.sleep(30)
        stop.set()
        for thread in threads:
            thread.join(60)
        # The tail below the threshold is consolidated by one last manual trigger.
        wait_for(
            lambda: (
                _scalar(
                    postgres_url,
                    "SELECT count(*) FROM consolidation_jobs "
                    "WHERE status IN ('pending', 'running')",
                )
                == 0
            ),
            timeout=60,
            what="the storm's last job",
        )
        triggers = ConsolidationTriggerService(db, settings=AppSettings(database_url=postgres_url))
        triggers.trigger_consolidation_sync(project.id)
        wait_for(
            lambda: (
                _scalar(
                    postgres_url, "SELECT count(*) FROM task_memories WHERE NOT is_consolidated"
                )
                == 0
            ),
            timeout=60,
            what="every memory consolidated",
        )
    db.dispose()

    stored = _scalar(postgres_url, "SELECT count(*) FROM task_memories")
    assert failures == []
    assert len(accepted) > 1000
    assert stored == len(accepted)  # count in = count stored
    assert most_active[0] == 1  # at every sampled instant, at most one active job
    jobs = _scalar(
        postgres_url, "SELECT count(*) FROM consolidation_jobs WHERE trigger_type = 'threshold'"
    )
    assert jobs >= 2
    assert (
        _scalar(postgres_url, "SELECT count(*) FROM consolidation_jobs WHERE status <> 'completed'")
        == 0
    )


# --- 5. a deploy in the middle of a job -----------------------------------------------------------


def test_sigterm_mid_job_stops_in_time_and_another_replica_finishes_it(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    factories.memories(project.id, 40_000)
    env = _env(tmp_path, postgres_url, worker_batch_size="20")
    triggers = ConsolidationTriggerService(db, settings=AppSettings(database_url=postgres_url))

    with serve(env, check_exit=False) as old:
        job_id = triggers.trigger_consolidation_sync(project.id)
        wait_for(
            lambda: (
                _scalar(postgres_url, "SELECT count(*) FROM task_memories WHERE is_consolidated")
                >= 1000
            ),
            timeout=30,
            what="the job under way",
        )
        with serve(env) as new:
            stopped_in = old.stop(timeout=30)
            assert old.process.returncode in (0, -signal.SIGTERM), old.output()
            wait_for(
                lambda: (
                    _scalar(
                        postgres_url,
                        "SELECT status FROM consolidation_jobs WHERE id = %s",
                        (job_id,),
                    )
                    == "completed"
                ),
                timeout=120,
                what="the job completed by the new replica",
            )
            handed_back = "handed back" in old.output()
            new_output = new.output()
    db.dispose()

    assert stopped_in < 15
    assert handed_back
    assert f"job {job_id} of project {project.id}: running" in new_output
    assert (
        _scalar(postgres_url, "SELECT count(*) FROM task_memories WHERE NOT is_consolidated") == 0
    )
    result = _scalar(postgres_url, "SELECT result FROM consolidation_jobs WHERE id = %s", (job_id,))
    assert result["memories_processed"] == 40_000  # resumed, nothing counted twice
    assert (
        _scalar(postgres_url, "SELECT count(*) FROM consolidation_jobs WHERE status = 'running'")
        == 0
    )
