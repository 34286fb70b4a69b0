"""Alembic environment of our schema, for the `alembic` command run from a checkout
(`alembic revision --autogenerate` and the like) on the URL from alembic.ini or the
settings. Installed code migrates through omoi_os.migrations.upgrade, which runs our
scripts on a MigrationContext of its own with the same options (migration_options)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from omoi_os.config import get_app_settings
from omoi_os.migrations import adopt_legacy_version, migration_options, refuse_newer, search_path
from omoi_os.services.database import create_database_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations_online() -> None:
    settings = get_app_settings()
    url = config.get_main_option("sqlalchemy.url") or settings.database_url
    schema = settings.database_schema
    engine = create_database_engine(url)
    try:
        # One transaction for the whole run, committed at the end (Alembic treats SQLite
        # as non-transactional and would leave work done outside a revision uncommitted).
        with engine.begin() as connection, search_path(connection, schema):
            context.configure(connection=connection, **migration_options(connection, schema))
            with context.begin_transaction():
                adopt_legacy_version(connection, schema)
                where = connection.engine.url.render_as_string()
                refuse_newer(context.get_context().get_current_revision(), where)
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
