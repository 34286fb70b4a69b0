"""Alembic environment of our schema: migrates Base.metadata, keeping our revision in
our own version table (omoi_os.migrations.VERSION_TABLE), on the connection handed over
by omoi_os.migrations.upgrade (a URL's, an Engine's, or a host's own migration
connection) or, run by the `alembic` command from a checkout, on the URL from
alembic.ini or the settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from omoi_os.config import get_app_settings
from omoi_os.migrations import VERSION_TABLE, adopt_legacy_version, refuse_newer
from omoi_os.models import Base
from omoi_os.services.database import create_database_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        adopt_legacy_version(connection)
        where = connection.engine.url.render_as_string()
        refuse_newer(context.get_context().get_current_revision(), where)
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or get_app_settings().database_url
    engine = create_database_engine(url)
    try:
        # One transaction for the whole run, committed at the end (Alembic treats SQLite
        # as non-transactional and would leave work done outside a revision uncommitted).
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
