"""The system routes (api/routes/system.py): the schedule (with the API), and health
and metrics (for probes and scrapers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from omoi_os.api import create_app
from omoi_os.config import AppSettings
from omoi_os.models import ConsolidationJob, SchedulePause
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.store.jobs import CONSOLIDATION_TASK
from tests.support.api import AUTH, BOB, create, create_project, health_without_skew
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories


def test_schedule_describes_the_configuration(client: TestClient, settings: AppSettings) -> None:
    minute, hour = settings.consolidation_schedule.split()[:2]  # daily, from conftest

    response = client.get("/api/v1/consolidation/schedule", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    next_run = body.pop("next_run_utc")
    assert next_run.endswith(f"T{int(hour):02d}:{int(minute):02d}:00Z")
    assert body.pop("next_run_local") == next_run
    assert body == {
        "cron": settings.consolidation_schedule,
        "timezone": "UTC",
        "threshold": 10,
        "cooldown_seconds": 300,
        "debounce_seconds": 0,
        "misfire_grace_seconds": 3600,
        "timeout_seconds": 600,
        "scheduler_running": True,
        "pause": None,
    }


def test_schedule_gives_the_next_run_in_local_time_too(settings: AppSettings) -> None:
    berlin = settings.model_copy(
        update={"consolidation_schedule": "30 2 * * *", "consolidation_timezone": "Europe/Berlin"}
    )
    with TestClient(create_app(berlin)) as client:
        body = client.get("/api/v1/consolidation/schedule", headers=AUTH).json()

    assert (body["cron"], body["timezone"]) == ("30 2 * * *", "Europe/Berlin")
    next_utc = datetime.fromisoformat(body["next_run_utc"])
    next_local = datetime.fromisoformat(body["next_run_local"])
    assert next_local == next_utc
    assert (next_local.hour, next_local.minute, next_local.second) == (2, 30, 0)
    assert next_local.utcoffset() in {timedelta(hours=1), timedelta(hours=2)}  # CET or CEST
    assert next_utc.utcoffset() == timedelta(0)
    assert next_utc > datetime.now(UTC)


def test_health_answers_ok_while_database_and_scheduler_run(client: TestClient) -> None:
    response = client.get("/healthz")

    assert (response.status_code, health_without_skew(response)) == (
        200,
        {
            "status": "ok",
            "database": "ok",
            "scheduler": "running",
            "queue": "ok",
            "oldest_claimable_seconds": 0.0,
            "clock": "ok",
        },
    )


def test_health_answers_503_when_the_scheduler_is_stopped(client: TestClient) -> None:
    client.app.state.runtime.triggers.stop()  # type: ignore[attr-defined]

    response = client.get("/healthz")

    assert (response.status_code, health_without_skew(response)) == (
        503,
        {
            "status": "unavailable",
            "database": "ok",
            "scheduler": "stopped",
            "queue": "ok",
            "oldest_claimable_seconds": 0.0,
            "clock": "ok",
        },
    )


def test_health_flags_a_queue_no_worker_takes_and_still_answers_200(
    settings: AppSettings, clock: FakeClock
) -> None:
    """An API replica without workers stays healthy (a liveness probe must not restart
    it for workers that are elsewhere), but says that no worker takes the queue."""
    limited = settings.model_copy(update={"health_queue_wait_limit": 300})
    runtime = ConsolidationRuntime(limited, clock=clock)
    with runtime.db.transaction() as session:
        runtime.queue.enqueue(
            session=session,
            task_type=CONSOLIDATION_TASK,
            tasks=[("waiting", T0 - timedelta(seconds=300)), ("later", T0 + timedelta(hours=1))],
        )

    with TestClient(create_app(runtime=runtime)) as client:
        at_the_limit = client.get("/healthz")
        clock.advance(timedelta(seconds=1))
        past_it = client.get("/healthz")

    # An injected clock is the database's time as the test says: no skew to read.
    expected = {
        "status": "ok",
        "database": "ok",
        "scheduler": "running",
        "clock": "ok",
        "clock_skew_seconds": None,
    }
    assert (at_the_limit.status_code, at_the_limit.json()) == (
        200,
        expected | {"queue": "ok", "oldest_claimable_seconds": 300.0},
    )
    assert (past_it.status_code, past_it.json()) == (
        200,
        expected | {"queue": "stalled", "oldest_claimable_seconds": 301.0},
    )


def test_metrics_exposition_includes_the_omoi_metrics(client: TestClient) -> None:
    project = create_project(client)
    memory = {"memory_type": "error_fix", "execution_summary": "retry with backoff"}
    answers = [
        create(client, f"/api/v1/projects/{project['id']}/memories", memory) for _ in range(10)
    ]
    assert isinstance(answers[-1]["consolidation_job_id"], int)

    metrics = client.get("/metrics")

    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    samples = _samples(metrics.text)
    assert samples["omoi_database_up"] == 1.0
    assert samples['omoi_consolidation_jobs{status="pending"}'] == 1.0
    assert samples['omoi_task_queue_depth{state="queued",task_type="consolidation"}'] == 1.0
    assert (
        samples['omoi_consolidation_triggers_total{outcome="created",trigger_type="threshold"}']
        == 1.0
    )
    assert (
        samples[
            'omoi_consolidation_triggers_total{outcome="skipped_below_threshold",'
            'trigger_type="threshold"}'
        ]
        == 9.0
    )
    assert samples["omoi_consolidation_threshold_check_seconds_count"] == 10.0
    assert samples["omoi_consolidation_tick_fanout_seconds_count"] == 0.0


def _samples(exposition: str) -> dict[str, float]:
    """`name{labels} value` lines of a Prometheus text exposition, by name and labels."""
    samples = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


# --- pausing the schedule, and its ticks' history ---------------------------------------


def test_pause_and_resume_the_schedule(client: TestClient, factories: Factories) -> None:
    url = "/api/v1/consolidation/schedule/pause"

    paused = client.put(url, json={"reason": "database upgrade"}, headers=BOB)
    again = client.put(url, headers=AUTH)  # paused already: bob's pause is answered
    schedule = client.get("/api/v1/consolidation/schedule", headers=AUTH).json()

    assert paused.status_code == 200, paused.text
    pause = paused.json()
    assert (pause["paused_by"], pause["reason"]) == ("bob", "database upgrade")
    assert (again.status_code, again.json()) == (200, pause)
    assert schedule["pause"] == pause
    with factories.db.read() as session:
        rows = session.scalars(select(SchedulePause)).all()
    assert [(row.id, row.paused_by, row.reason) for row in rows] == [(1, "bob", "database upgrade")]

    resumed = [client.delete(url, headers=AUTH) for _ in range(2)]

    assert [(answer.status_code, answer.content) for answer in resumed] == [(204, b"")] * 2
    assert factories.count(SchedulePause) == 0
    assert client.get("/api/v1/consolidation/schedule", headers=AUTH).json()["pause"] is None


def test_a_bad_pause_reason_is_422_and_writes_nothing(
    client: TestClient, factories: Factories
) -> None:
    answers = [
        client.put("/api/v1/consolidation/schedule/pause", json=body, headers=AUTH)
        for body in ({"reason": "x" * 501}, {"reason": ""}, {"reason": "nul\u0000"})
    ]

    assert [answer.status_code for answer in answers] == [422] * 3
    assert [answer.json()["detail"][0]["loc"] for answer in answers] == [["body", "reason"]] * 3
    assert factories.count(SchedulePause) == 0


def test_the_ticks_history_newest_first(client: TestClient, factories: Factories) -> None:
    factories.projects(2, new_memories=1)
    triggers = client.app.state.runtime.triggers  # type: ignore[attr-defined]
    first, second = T0, T0 + timedelta(days=1)
    triggers.run_scheduled_tick_sync(first)
    client.put("/api/v1/consolidation/schedule/pause", headers=AUTH)
    triggers.run_scheduled_tick_sync(second)

    page = client.get("/api/v1/consolidation/ticks", params={"limit": 1}, headers=AUTH)
    rest = client.get("/api/v1/consolidation/ticks", params={"offset": 1}, headers=AUTH)

    assert page.status_code == 200, page.text
    (paused,) = page.json()["items"]
    (ran,) = rest.json()["items"]
    assert (page.json()["next_offset"], rest.json()["next_offset"]) == (1, None)
    assert paused | {"fired_at": None} == {
        "scheduled_for": "2026-01-06T12:00:00Z",
        "fired_at": None,
        "jobs_created": 0,
        "skipped_active": 0,
        "skipped_idle": 0,
        "skipped_paused": 0,
        "schedule_paused": True,
        "caught_up": False,
    }
    assert (ran["scheduled_for"], ran["jobs_created"], ran["schedule_paused"]) == (
        "2026-01-05T12:00:00Z",
        2,
        False,
    )
    assert factories.count(ConsolidationJob) == 2
