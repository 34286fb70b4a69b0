"""The `omoi-os` command line: serve, worker, migrate, trigger, jobs, schedule."""

from __future__ import annotations

import getpass
import json
import logging
import secrets
import signal
import threading
import uuid
from datetime import datetime
from typing import Annotated, NoReturn

import typer
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import OperationalError

from omoi_os import migrations
from omoi_os.config import AppSettings
from omoi_os.models import JobStatus, TriggerType
from omoi_os.services.consolidation import jobs as job_queries
from omoi_os.services.consolidation.errors import ConsolidationError
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService

app = typer.Typer(
    help="omoi_os backend: memory-consolidation triggers, jobs and queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        fail(f"OMOI_{field.upper()}={error.get('input')!r}: {error['msg']}")


def _is_sqlite(settings: AppSettings) -> bool:
    return settings.database_url.startswith("sqlite")


def _open_current_database(settings: AppSettings) -> DatabaseService:
    """The configured database, checked to be reachable and migrated."""
    db = DatabaseService(settings=settings)
    try:
        migrations.ensure_current(db.engine)
    except migrations.SchemaNotCurrent as exc:
        db.dispose()
        fail(str(exc))
    except OperationalError as exc:
        db.dispose()
        fail(f"cannot reach the database: {exc.orig}")
    return db


@app.command()
def migrate() -> None:
    """Migrate the configured database to the newest schema."""
    settings = load_settings()
    try:
        migrations.upgrade(settings.database_url)
    except OperationalError as exc:
        fail(f"cannot reach the database: {exc.orig}")
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

    _configure_logging(log_level)
    settings = load_settings()
    if _is_sqlite(settings):
        migrations.upgrade(settings.database_url)
    _open_current_database(settings).dispose()
    if not settings.api_tokens:
        settings = _with_generated_token(settings, host, port)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
    )


def _configure_logging(level: str) -> None:
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
    _configure_logging(log_level)
    settings = load_settings()
    db = _open_current_database(settings)
    consolidation = ConsolidationWorker(db, settings=settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    consolidation.start()
    typer.echo(f"worker {consolidation.worker_id} running; SIGTERM or Ctrl-C stops it", err=True)
    stop.wait()
    consolidation.stop()
    db.dispose()


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
    db = _open_current_database(settings)
    triggers = ConsolidationTriggerService(db, settings=settings)
    try:
        job_id = triggers.trigger_consolidation_sync(
            project_id, TriggerType.MANUAL, parsed, triggered_by=f"cli:{getpass.getuser()}"
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        fail(f"--scope: {'.'.join(map(str, error['loc']))}: {error['msg']}")
    except ConsolidationError as exc:
        fail(str(exc))
    finally:
        db.dispose()
    typer.echo(f"created consolidation job {job_id}")


@app.command()
def jobs(
    project: Annotated[str | None, typer.Option(help="Only this project's jobs (a UUID)")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """List consolidation jobs, newest first."""
    project_id = None
    if project is not None:
        try:
            project_id = uuid.UUID(project)
        except ValueError:
            fail(f"--project {project!r} is not a UUID")
    settings = load_settings()
    db = _open_current_database(settings)
    try:
        with db.get_session() as session:
            rows = job_queries.list_jobs(session, project_id, status=status, limit=limit)
    finally:
        db.dispose()
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


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def main() -> None:
    """Console-script entry point."""
    app()
