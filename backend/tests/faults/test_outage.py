"""The database goes away and comes back under a running replica: routes answer 503
(not 500, not a hang), health says so, the scheduler and the worker log one line and
go on, and the tick that passed during the outage runs once afterwards. The outage is
a TCP proxy in front of the test database, cut and restored."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from omoi_os.services.database import DatabaseService
from tests.faults.queries import AUTH, query, replica_env, scalar
from tests.support.factories import Factories
from tests.support.polling import wait_for
from tests.support.proxy import TcpProxy
from tests.support.servers import serve

pytestmark = [pytest.mark.fault, pytest.mark.postgres_only]


# --- 3. the database goes away and comes back ---------------------------------------------------


def test_a_database_outage_answers_503_and_everything_recovers(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    factories.projects(20, new_memories=1)
    db.dispose()
    database = make_url(postgres_url)
    proxy = TcpProxy(target_port=database.port or 5432, target_host=database.host or "127.0.0.1")
    via_proxy = database.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )
    assert make_url(via_proxy).port == proxy.port  # the replica can only reach it through us
    # A tick at the next minute boundary, which will fall inside the outage.
    boundary = _next_minute_boundary(at_least=timedelta(seconds=25))
    env = replica_env(
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
            lambda: scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") == 1,
            timeout=60,
            what="the missed tick run after the outage",
        )
        wait_for(  # the worker, which kept polling through the outage, runs them all
            lambda: (
                scalar(
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
    # the two answered 201, beside the twenty projects' own
    assert scalar(postgres_url, "SELECT count(*) FROM task_memories") == 2 + 20
    tick_jobs = query(
        postgres_url,
        "SELECT project_id, count(*) FROM consolidation_jobs "
        "WHERE trigger_type = 'scheduled' GROUP BY 1",
    )
    assert len(tick_jobs) == 21 and {row[1] for row in tick_jobs} == {1}
    # The scheduler and the worker saw the outage, said so in one line, and went on.
    assert "consolidation worker: database unavailable" in output
    # The tick's own timer fired inside the outage (the periodic pass may have too).
    assert "consolidation run_on_timer: database unavailable" in output
    assert "Traceback" not in output


def _next_minute_boundary(at_least: timedelta) -> datetime:
    boundary = (datetime.now(UTC) + at_least).replace(second=0, microsecond=0)
    return boundary + timedelta(minutes=1)


def _sleep_until(moment: datetime) -> None:
    time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0))
