"""The system routes (api/routes/system.py): the schedule (with the API), and health
and metrics (for probes and scrapers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from omoi_os.api import create_app
from omoi_os.config import AppSettings
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.store.jobs import CONSOLIDATION_TASK
from tests.support.api import AUTH, create, create_project
from tests.support.clocks import FakeClock
from tests.support.factories import T0


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

    assert (response.status_code, response.json()) == (
        200,
        {
            "status": "ok",
            "database": "ok",
            "scheduler": "running",
            "queue": "ok",
            "oldest_claimable_seconds": 0.0,
        },
    )


def test_health_answers_503_when_the_scheduler_is_stopped(client: TestClient) -> None:
    client.app.state.runtime.triggers.stop()  # type: ignore[attr-defined]

    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (
        503,
        {
            "status": "unavailable",
            "database": "ok",
            "scheduler": "stopped",
            "queue": "ok",
            "oldest_claimable_seconds": 0.0,
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

    expected = {"status": "ok", "database": "ok", "scheduler": "running"}
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
