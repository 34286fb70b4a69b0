"""The database goes away and comes back under a running replica: routes answer 503
(not 500, not a hang), health says so, the scheduler and the worker log one line (no
traceback) and go on, and the scheduled tick whose instant passed during the outage
runs once afterwards, caught up. The outage is a TCP proxy in front of the test
database, cut and restored: the replica reaches PostgreSQL only through it.

Time is the test's. The replica (the runtime and its app, served in this process on a
real socket) runs on a FakeClock, so the tick's instant passes when the test moves the
clock, inside the outage. What catches a missed tick up is the scheduler's periodic
pass; the runtime runs it every 30 s of the wall clock and takes no other interval, so
beside it the test runs the same trigger service, on the same database, queue and
clock, with a pass every 0.2 s: the scheduler meets the outage and the recovery within
a pass, and the test waits on neither a cron tick nor a 30 s interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.engine import make_url

from omoi_os.api import create_app
from omoi_os.config import AppSettings
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from tests.faults.queries import AUTH, TOKEN, orphans, query, scalar
from tests.support.app_server import serve_app
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.logs import one, records
from tests.support.polling import wait_for
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.fault, pytest.mark.postgres_only]

SCHEDULE = "0 3 * * *"
TICK = T0.replace(hour=3)  # the schedule's tick that falls inside the outage
PASS_EVERY = timedelta(milliseconds=200)
WORKER_LOGGER = "omoi_os.services.consolidation.worker"


# --- 3. the database goes away and comes back ---------------------------------------------------


def test_a_database_outage_answers_503_and_everything_recovers(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    factories.projects(20, new_memories=1)
    db.dispose()
    proxy = _proxy_to(postgres_url)
    via_proxy = _through(proxy, postgres_url)
    clock = FakeClock(TICK - timedelta(minutes=1))  # the tick has not come yet
    runtime = ConsolidationRuntime(_replica_settings(via_proxy), clock=clock)
    memory = {"memory_type": "warning", "execution_summary": "disk nearly full"}
    memories = f"/api/v1/projects/{project.id}/memories"

    with (
        serve_app(create_app(runtime=runtime)) as server,
        httpx.Client(base_url=server.base_url, headers=AUTH) as client,
        _periodic_pass_every(PASS_EVERY, runtime, clock) as catch_up,
    ):
        before = client.post(memories, json=memory)
        proxy.cut()
        clock.set(TICK + timedelta(seconds=30))  # the tick passes while cut off
        began = time.monotonic()
        during = [client.post(memories, json=memory, timeout=20) for _ in range(3)]
        slowest = time.monotonic() - began
        health = client.get("/healthz", timeout=20)
        # Both meet the outage while it lasts (each within a pass or a poll).
        wait_for(lambda: _scheduler_lines(caplog) != [], what="the scheduler to meet the outage")
        wait_for(lambda: _worker_lines(caplog) != [], what="the worker to meet the outage")
        assert records(caplog, "tick_ran") == []  # nothing ran the tick meanwhile
        # Still running, nothing restarted.
        alive = (server.running, runtime.running, runtime.worker.running, catch_up.running)
        proxy.restore()
        wait_for(lambda: client.get("/healthz").status_code == 200, timeout=30, what="health back")
        after = client.post(memories, json=memory)
        wait_for(
            lambda: scalar(postgres_url, "SELECT count(*) FROM consolidation_ticks") == 1,
            what="the missed tick caught up after the outage",
        )
        wait_for(  # the worker, which kept polling through the outage, runs them all
            lambda: _completed_jobs(postgres_url) == 21,
            timeout=60,
            what="the tick's jobs completed by the worker",
        )
    proxy.close()

    assert before.status_code == 201
    assert [r.status_code for r in during] == [503, 503, 503]
    assert during[0].json() == {"detail": "the database is unavailable; retry shortly"}
    assert during[0].headers["Retry-After"] == "5"
    assert slowest < 15  # answered, not hung
    assert (health.status_code, health.json()["database"]) == (503, "unavailable")
    assert alive == (True, True, True, True)
    assert after.status_code == 201
    # The two answered 201, beside the twenty projects' own; the 503s wrote nothing.
    assert scalar(postgres_url, "SELECT count(*) FROM task_memories") == 2 + 20
    # The tick ran once, after the outage, by the catch-up, at the clock's time.
    assert query(
        postgres_url,
        "SELECT scheduled_for, fired_at, caught_up, jobs_created FROM consolidation_ticks",
    ) == [(TICK, TICK + timedelta(seconds=30), True, 21)]
    assert one(caplog, "tick_ran").jobs_created == 21
    tick_jobs = query(
        postgres_url,
        "SELECT project_id, count(*) FROM consolidation_jobs "
        "WHERE trigger_type = 'scheduled' GROUP BY 1",
    )
    assert len(tick_jobs) == 21 and {row[1] for row in tick_jobs} == {1}
    assert orphans(postgres_url) == (0, 0)
    # The scheduler and the worker said so in one line each time, and went on: an
    # outage is not a failure, and nothing anywhere logged a traceback.
    assert all(r.exc_info is None for r in _scheduler_lines(caplog) + _worker_lines(caplog))
    assert records(caplog, "callback_failed") == []
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.stack_info] == []
    assert "Traceback" not in caplog.text


def _replica_settings(database_url: str) -> AppSettings:
    return AppSettings(
        database_url=database_url,
        api_tokens=f"fault:{TOKEN}",
        worker_poll_interval=0.2,
        consolidation_threshold=10,
        consolidation_schedule=SCHEDULE,
    )


def _proxy_to(url: str) -> TcpProxy:
    database = make_url(url)
    return TcpProxy(target_port=database.port or 5432, target_host=database.host or "127.0.0.1")


def _through(proxy: TcpProxy, url: str) -> str:
    """`url`, reached through the proxy only."""
    via_proxy = make_url(url).set(host="127.0.0.1", port=proxy.port)
    assert via_proxy.port == proxy.port
    return via_proxy.render_as_string(hide_password=False)


@contextmanager
def _periodic_pass_every(
    interval: timedelta, runtime: ConsolidationRuntime, clock: FakeClock
) -> Iterator[ConsolidationTriggerService]:
    """The replica's trigger service again, on its database, queue and clock, with a
    periodic pass (the tick catch-up first) every `interval` instead of every 30 s."""
    triggers = ConsolidationTriggerService(
        runtime.db,
        settings=runtime.settings,
        task_queue=runtime.queue,
        clock=clock,
        periodic_interval=interval,
    )
    triggers.start()
    try:
        yield triggers
    finally:
        triggers.stop()


def _scheduler_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return records(caplog, "callback_database_unavailable")


def _worker_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # The worker's line carries no `action` field: its message's stable part, then.
    return [
        r
        for r in caplog.records
        if r.name == WORKER_LOGGER
        and r.getMessage().startswith("consolidation worker: database unavailable")
    ]


def _completed_jobs(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM consolidation_jobs WHERE status = 'completed'"))
