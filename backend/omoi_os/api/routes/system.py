"""The schedule (with the API), and health and metrics (for probes and scrapers)."""

from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from omoi_os.api.deps import Principal, Runtime
from omoi_os.api.errors import error_responses
from omoi_os.api.paging import Limit, Offset
from omoi_os.api.route_class import ConsolidationRoute, get_and_head
from omoi_os.api.schemas import (
    HealthOut,
    PauseRequest,
    ScheduleOut,
    SchedulePauseOut,
    TickOut,
    TickPage,
)
from omoi_os.services.health import HealthReport

router = APIRouter(tags=["system"], route_class=ConsolidationRoute)


@get_and_head(router, "/consolidation/schedule", response_model=ScheduleOut)
def read_schedule(runtime: Runtime) -> ScheduleOut:
    """The consolidation schedule, its next run, and the trigger settings."""
    settings, triggers = runtime.settings, runtime.triggers
    next_run = triggers.next_run_time()
    return ScheduleOut(
        cron=settings.consolidation_schedule,
        timezone=settings.consolidation_timezone,
        next_run_utc=next_run,
        next_run_local=next_run.astimezone(triggers.schedule.timezone) if next_run else None,
        threshold=settings.consolidation_threshold,
        cooldown_seconds=settings.consolidation_cooldown,
        debounce_seconds=settings.consolidation_debounce,
        misfire_grace_seconds=settings.consolidation_misfire_grace,
        timeout_seconds=settings.consolidation_timeout,
        scheduler_running=triggers.running,
        pause=_pause_out(runtime),
    )


def _pause_out(runtime: Runtime) -> SchedulePauseOut | None:
    pause = runtime.schedule.current_pause_sync()
    return None if pause is None else SchedulePauseOut.model_validate(pause)


@router.put(
    "/consolidation/schedule/pause",
    response_model=SchedulePauseOut,
    responses=error_responses(400, 415),
)
def pause_schedule(
    principal: Principal, runtime: Runtime, body: PauseRequest | None = None
) -> SchedulePauseOut:
    """Pause the schedule on every replica: each tick that falls due is recorded as
    passed over (`schedule_paused`), creates no job, and is never caught up. Pausing a
    paused schedule answers the pause in force, unchanged."""
    reason = body.reason if body is not None else None
    return SchedulePauseOut.model_validate(runtime.schedule.pause_sync(by=principal, reason=reason))


@router.delete("/consolidation/schedule/pause", status_code=status.HTTP_204_NO_CONTENT)
def resume_schedule(runtime: Runtime) -> None:
    """Resume the schedule (also when it is not paused): the next tick creates jobs."""
    runtime.schedule.resume_sync()


@get_and_head(router, "/consolidation/ticks", response_model=TickPage)
def list_ticks(runtime: Runtime, limit: Limit = 50, offset: Offset = 0) -> TickPage:
    """The schedule's ticks as they were run, newest first."""
    page = runtime.schedule.ticks_sync(limit=limit, offset=offset)
    return TickPage(
        items=[TickOut.model_validate(tick) for tick in page.items],
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
    )


ops_router = APIRouter(tags=["system"], route_class=ConsolidationRoute)

HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Database reachable and scheduler running", "model": HealthOut},
    503: {"description": "Database unreachable or scheduler stopped", "model": HealthOut},
}


@get_and_head(ops_router, "/healthz", response_model=None, responses=HEALTH_RESPONSES)
def health(runtime: Runtime) -> JSONResponse:
    """200 when the database answers and the scheduler runs; 503 otherwise. The queue's
    wait is reported (and flagged past its limit) without changing the status."""
    report = runtime.health.check_sync(scheduler_running=runtime.triggers.running)
    waited = report.oldest_claimable_seconds
    body = HealthOut(
        status="ok" if report.healthy else "unavailable",
        database="ok" if report.database_ok else "unavailable",
        scheduler="running" if report.scheduler_running else "stopped",
        queue=_queue_state(report),
        oldest_claimable_seconds=_rounded(waited),
        clock="skewed" if report.clock_skewed else "ok",
        clock_skew_seconds=_rounded(report.clock_skew_seconds),
    )
    return JSONResponse(body.model_dump(), status_code=200 if report.healthy else 503)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _queue_state(report: HealthReport) -> str:
    if report.oldest_claimable_seconds is None:
        return "unknown"
    return "stalled" if report.queue_stalled else "ok"


@get_and_head(ops_router, "/metrics", response_class=Response)
def metrics(runtime: Runtime) -> Response:
    """Prometheus metrics (text format): this process's counters, or with
    PROMETHEUS_MULTIPROC_DIR the sum over every worker process's; the database gauges once."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
