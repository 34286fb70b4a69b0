"""The `omoi-os` command line."""

from __future__ import annotations

from typing import NoReturn

import typer
from pydantic import ValidationError

from omoi_os import migrations
from omoi_os.config import AppSettings

app = typer.Typer(
    help="omoi_os backend: memory-consolidation triggers, jobs and queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


@app.command()
def migrate() -> None:
    """Migrate the configured database to the newest schema."""
    settings = load_settings()
    migrations.upgrade(settings.database_url)
    typer.echo(f"database migrated to {migrations.head_revision()}")


def main() -> None:
    """Console-script entry point."""
    app()
