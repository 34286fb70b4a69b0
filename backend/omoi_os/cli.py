"""The `omoi-os` command line: serve, worker, migrate, trigger, cancel, retry, jobs,
schedule, pause, resume, ticks, projects."""

from __future__ import annotations

import getpass
import json
import logging
import secrets
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import DatabaseError, OperationalError

from omoi_os import migrations
from omoi_os.config import AppSettings, shown_setting
from omoi_os.errors import ConsolidationError
from omoi_os.failures import first_line
from omoi_os.models import JobStatus, TriggerType
from omoi_os.services.consolidation.cancellation import Cancelled
from omoi_os.services.database import DatabaseDirectoryError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from omoi_os.runtime import ConsolidationRuntime

app = typer.Typer(
    help="omoi_os backend: memory-consolidation triggers, jobs and queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# How often `omoi-os worker` reads the database's clock (the scheduler's pass does it
# in `serve`).
CLOCK_READING_INTERVAL_S = 30.0

logger = logging.getLogger(__name__)


@app.callback()
def _group() -> None:
    """omoi_os backend: memory-consolidation triggers, jobs and queue."""


def fail(message: str) -> NoReturn:
    """Print one clear line to stderr and exit non-zero."""
    typer.echo(f"omoi-os: error: {message}", err=True)
    raise typer.Exit(code=2)


def load_settings() -> AppSettings:
    """Settings from the environment; a bad value ends the command naming the setting."""
    try:
        return AppSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        fail(f"OMOI_{field.upper()}={shown_setting(field, error.get('input'))}: {error['msg']}")


def _is_sqlite(settings: AppSettings) -> bool:
    return settings.database_url.startswith("sqlite")


@contextmanager
def database_errors_in_one_line() -> Iterator[None]:
    """A database that cannot be used ends the command with one line naming why."""
    try:
        yield
    except migrations.SchemaNotCurrent as exc:
        fail(str(exc))
    except DatabaseDirectoryError as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(f"cannot reach the database: {first_line(exc.orig)}")
    except DatabaseError as exc:  # e.g. a file that is not a SQLite database
        fail(f"cannot use the database: {first_line(exc.orig)}")


def _cli_principal() -> str:
    """Who the command line acts as (recorded as triggered_by, paused_by, cancelled_by)."""
    return f"cli:{getpass.getuser()}"


def _project_option(project: str | None) -> uuid.UUID | None:
    """The --project option as a UUID; a value that is not one ends the command."""
    if project is None:
        return None
    try:
        return uuid.UUID(project)
    except ValueError:
        fail(f"--project {project!r} is not a UUID")


@contextmanager
def opened_runtime() -> Iterator[ConsolidationRuntime]:
    """The runtime for one command: a refusal of ours (an unknown project, a bad value)
    ends it with one line; it is closed afterwards."""
    with checked_runtime(load_settings()) as runtime:
        try:
            yield runtime
        except (ConsolidationError, ValueError) as exc:
            fail(str(exc))


@contextmanager
def checked_runtime(
    settings: AppSettings, *, read_clock: bool = True
) -> Iterator[ConsolidationRuntime]:
    """The runtime on the configured database, checked to be reachable and migrated,
    its clock set to the database's (unless not `read_clock`), and closed
    (`runtime.close()`) however the command ends: the one way a command lets go of its
    runtime."""
    from omoi_os.runtime import ConsolidationRuntime  # FastAPI and the rest: not for --help

    runtime = ConsolidationRuntime(settings)
    try:
        with database_errors_in_one_line():
            migrations.ensure_current(runtime.db.engine)
            if read_clock:
                runtime.synchronize_clock()
        yield runtime
    finally:
        runtime.close()


@app.command()
def migrate() -> None:
    """Migrate the configured database to the newest schema."""
    settings = load_settings()
    with database_errors_in_one_line():
        migrations.upgrade(settings.database_url, schema=settings.database_schema)
    typer.echo(f"database migrated to {migrations.head_revision()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run the HTTP API with the scheduler. Migrates the embedded SQLite database
    itself; a PostgreSQL database must be migrated first (`omoi-os migrate`)."""
    import uvicorn

    from omoi_os.api import create_app
    from omoi_os.api.access_log import redact_access_log

    settings = load_settings()
    if _is_sqlite(settings):
        with database_errors_in_one_line():
            migrations.upgrade(settings.database_url, schema=settings.database_schema)
    with checked_runtime(settings, read_clock=False):
        pass  # the app builds its own; this one only checks the database, before a bind
    _configure_logging(log_level)  # only now: see _configure_logging
    # Bound before anything starts: a port in use ends here, with no scheduler or
    # worker ever started (uvicorn would start the app's lifespan first).
    listener = _bind(host, port)
    if not settings.api_tokens:
        settings = _with_generated_token(settings, host, port)
    config = uvicorn.Config(
        create_app(settings), log_level=log_level.lower(), timeout_graceful_shutdown=10
    )
    redact_access_log()  # after Config, which (re)configures uvicorn's loggers
    uvicorn.Server(config).run(sockets=[listener])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    listener.listen(2048)
    return listener


def _configure_logging(level: str) -> None:
    """Log to stderr at `level`. Called once the database is checked: closing a runtime
    that never started still logs its worker's stop, a second line under a refusal."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for chatty in ("alembic", "apscheduler"):  # their INFO lines repeat every few seconds
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def _with_generated_token(settings: AppSettings, host: str, port: int) -> AppSettings:
    """No OMOI_API_TOKENS: make one for this run and say so once (there is no auth-off)."""
    token = secrets.token_urlsafe(32)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    typer.echo(
        "No OMOI_API_TOKENS configured; generated a token for this run (name: admin):\n"
        f"  {token}\n"
        "Try it:\n"
        f"  curl -H 'Authorization: Bearer {token}' {base}/api/v1/consolidation/schedule\n"
        "Set OMOI_API_TOKENS=name:token,... to keep tokens across restarts.",
        err=True,
    )
    return settings.model_copy(update={"api_tokens": {"admin": SecretStr(token)}})


@app.command()
def worker(
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run consolidation workers in this process until SIGTERM or Ctrl-C; the job in
    progress then finishes its batch and is handed back."""
    settings = load_settings()
    with checked_runtime(settings) as runtime:
        metrics_server = _serve_worker_metrics(runtime, settings)
        _configure_logging(log_level)  # only now: see _configure_logging
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        runtime.worker.start()
        typer.echo(
            f"worker {runtime.worker.worker_id} running; SIGTERM or Ctrl-C stops it", err=True
        )
        while not stop.wait(CLOCK_READING_INTERVAL_S):
            _read_clock(runtime)  # no scheduler here: its periodic pass does not run
        runtime.worker.stop()  # the worker's own grace for its batch, longer than close()'s
        if metrics_server is not None:
            metrics_server.shutdown()


def _read_clock(runtime: ConsolidationRuntime) -> None:
    try:
        runtime.synchronize_clock()
    except OperationalError as exc:  # the worker's own loop says the database is down
        logger.debug("database clock not read: %s", exc.orig)


def _serve_worker_metrics(
    runtime: ConsolidationRuntime, settings: AppSettings
) -> WSGIServer | None:
    """Serve the runtime's metrics over HTTP if OMOI_WORKER_METRICS_PORT is set, so that
    the jobs this process finishes are counted somewhere a scraper can read. A port
    that cannot be bound ends the command before any worker starts."""
    from prometheus_client import start_http_server

    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    if port is None:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=runtime.metrics.registry)
    except OSError as exc:
        fail(f"cannot serve worker metrics on {host}:{port}: {exc.strerror or exc}")
    typer.echo(f"worker metrics on http://{host}:{port}/metrics", err=True)
    return server


@app.command()
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted")
    ] = False,
    older_than_days: Annotated[
        int | None,
        typer.Option(help="Delete history older than this many days (default: retention_days)"),
    ] = None,
) -> None:
    """Delete old history now: done and dead queue tasks, finished jobs (each project
    keeps its latest) and tick records (the newest is kept). Memories are never touched."""
    from omoi_os.services.consolidation.retention import check_retention_days

    if older_than_days is not None:
        try:
            check_retention_days(older_than_days)
        except ValueError as exc:
            fail(f"--older-than-days {older_than_days}: {exc}")
    with checked_runtime(load_settings()) as runtime, database_errors_in_one_line():
        _purge(runtime, older_than_days, dry_run=dry_run)


def _purge(runtime: ConsolidationRuntime, older_than_days: int | None, *, dry_run: bool) -> None:
    retention = runtime.retention
    before = _when(retention.cutoff(older_than_days))
    if dry_run:
        counts = retention.count_expired(older_than_days)
        typer.echo(f"would delete (dry run; history finished before {before} UTC):")
    else:
        summary = retention.purge(older_than_days)
        counts = summary.deleted
        transactions = sum(summary.transactions.values())
        typer.echo(f"deleted (history finished before {before} UTC, {transactions} transactions):")
    for table, count in counts.items():
        typer.echo(f"  {table:<20} {count:>10}")


@app.command()
def trigger(
    project_id: Annotated[str, typer.Argument(help="The project's id (a UUID)")],
    scope: Annotated[
        str | None,
        typer.Option(help='JSON scope, e.g. \'{"memory_types": ["error_fix"], "dry_run": true}\''),
    ] = None,
) -> None:
    """Trigger a consolidation of one project now (ignores the cooldown)."""
    settings = load_settings()
    try:
        parsed = json.loads(scope) if scope is not None else None
    except json.JSONDecodeError as exc:
        fail(f"--scope is not valid JSON: {exc}")
    with checked_runtime(settings) as runtime:
        try:
            job_id = runtime.triggers.trigger_consolidation_sync(
                project_id, TriggerType.MANUAL, parsed, triggered_by=_cli_principal()
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            fail(f"--scope: {'.'.join(map(str, error['loc']))}: {error['msg']}")
        except ConsolidationError as exc:
            fail(str(exc))
    typer.echo(f"created consolidation job {job_id}")


@app.command()
def cancel(
    job_id: Annotated[int, typer.Argument(min=1, help="The job's id")],
    reason: Annotated[str | None, typer.Option(help="Why, for the record")] = None,
) -> None:
    """Cancel a job: a pending one at once, a running one at the end of its batch."""
    with opened_runtime() as runtime:
        _, how = runtime.jobs.cancel_sync(job_id, by=_cli_principal(), reason=reason)
    if how is Cancelled.AT_ONCE:
        typer.echo(f"cancelled consolidation job {job_id}")
    else:
        typer.echo(f"consolidation job {job_id} stops at the end of its batch")


@app.command()
def retry(job_id: Annotated[int, typer.Argument(min=1, help="The failed job's id")]) -> None:
    """Retry a failed or timed-out job: a new job with its project and scope."""
    with opened_runtime() as runtime:
        new_job_id = runtime.triggers.retry_sync(job_id, triggered_by=_cli_principal())
    typer.echo(f"created consolidation job {new_job_id}, retrying job {job_id}")


@app.command()
def jobs(
    project: Annotated[str | None, typer.Option(help="Only this project's jobs (a UUID)")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status")] = None,
    trigger_type: Annotated[
        TriggerType | None, typer.Option(help="Only jobs of this trigger")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """List consolidation jobs of one project or of all, newest first."""
    project_id = _project_option(project)
    with opened_runtime() as runtime:
        rows = runtime.jobs.list_sync(
            project_id=project_id, status=status, trigger_type=trigger_type, limit=limit
        ).items
    typer.echo(
        f"{'id':>8}  {'project':<36}  {'status':<10} {'trigger':<10} {'created (UTC)':<20} "
        "finished (UTC)"
    )
    for job in rows:
        typer.echo(
            f"{job.id:>8}  {job.project_id!s:<36}  {job.status.value:<10} "
            f"{job.trigger_type.value:<10} {_when(job.created_at):<20} {_when(job.finished_at)}"
        )


@app.command()
def schedule(
    count: Annotated[int, typer.Option(min=1, max=100, help="How many run times")] = 5,
) -> None:
    """Show the next run times of the consolidation schedule, in UTC and local time."""
    settings = load_settings()
    cron = settings.schedule
    typer.echo(f"schedule: {cron}")
    ticks = cron.ticks_after(datetime.now(cron.timezone))
    for _ in range(count):
        tick = next(ticks, None)
        if tick is None:
            break
        typer.echo(f"  {_when(tick)} UTC   {tick.astimezone(cron.timezone).isoformat()}")


ProjectOption = Annotated[
    str | None, typer.Option("--project", help="This project (a UUID) instead of the schedule")
]


@app.command()
def pause(
    project: ProjectOption = None,
    reason: Annotated[str | None, typer.Option(help="Why (shown to other operators)")] = None,
) -> None:
    """Pause the schedule (every replica records its ticks and creates no job), or with
    --project one project (no scheduled or threshold job; a manual trigger still works)."""
    project_id = _project_option(project)
    since: datetime | None
    with opened_runtime() as runtime:
        if project_id is None:
            pause = runtime.schedule.pause_sync(by=_cli_principal(), reason=reason)
            what, since, by = "schedule", pause.paused_at, pause.paused_by
        else:
            paused = runtime.projects.pause_sync(project_id, by=_cli_principal(), reason=reason)
            what, since, by = f"project {project_id}", paused.paused_at, str(paused.paused_by)
    typer.echo(f"{what} paused since {_when(since)} UTC by {by}")


@app.command()
def resume(project: ProjectOption = None) -> None:
    """Resume the schedule, or with --project one project. Nothing starts by itself:
    ticks passed over stay so; a project's next memory write or tick sees its backlog."""
    project_id = _project_option(project)
    with opened_runtime() as runtime:
        if project_id is None:
            runtime.schedule.resume_sync()
        else:
            runtime.projects.resume_sync(project_id)
    typer.echo(f"{'schedule' if project_id is None else f'project {project_id}'} resumed")


@app.command()
def ticks(limit: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """The schedule's ticks as they were run, newest first."""
    with opened_runtime() as runtime:
        rows = runtime.schedule.ticks_sync(limit=limit).items
    typer.echo(
        f"{'tick (UTC)':<20} {'fired (UTC)':<20} {'jobs':>6} {'active':>7} {'idle':>7} "
        f"{'paused':>7}  note"
    )
    for tick in rows:
        note = ", ".join(
            word
            for word, shown in (
                ("schedule paused", tick.schedule_paused),
                ("caught up", tick.caught_up),
            )
            if shown
        )
        typer.echo(
            f"{_when(tick.scheduled_for):<20} {_when(tick.fired_at):<20} {tick.jobs_created:>6} "
            f"{tick.skipped_active:>7} {tick.skipped_idle:>7} {tick.skipped_paused:>7}  {note}"
        )


@app.command()
def projects(
    active: Annotated[
        bool | None, typer.Option("--active/--inactive", help="Only active (or inactive) ones")
    ] = None,
    paused: Annotated[
        bool | None, typer.Option("--paused/--not-paused", help="Only paused (or running) ones")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List projects (by id), with their own threshold and cooldown and their pause."""
    with opened_runtime() as runtime:
        page = runtime.projects.list_sync(active=active, paused=paused, limit=limit, offset=offset)
        effective = [runtime.projects.effective(project) for project in page.items]
    typer.echo(f"{'id':<36}  {'name':<24} {'active':<6} {'threshold':>9} {'cooldown':>8}  paused")
    for project, applied in zip(page.items, effective, strict=True):
        paused_note = (
            f"since {_when(project.paused_at)} by {project.paused_by}" if project.paused_at else "-"
        )
        typer.echo(
            f"{project.id!s:<36}  {project.name[:24]:<24} "
            f"{'yes' if project.is_active else 'no':<6} {applied.threshold:>9} "
            f"{applied.cooldown:>8}  {paused_note}"
        )
    if page.next_offset is not None:
        typer.echo(f"(more: --offset {page.next_offset})")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def main() -> None:
    """Console-script entry point."""
    app()
