"""Our schema's migrations, driven from code.

The Alembic scripts ship inside the package (`omoi_os.alembic`, built from
backend/migrations), so an installed wheel migrates from any directory. Our history
keeps its revision in its own table, `omoi_alembic_version`: a host application's
own Alembic history, in `alembic_version`, is never read or written.

Two ways to migrate: `omoi-os migrate` (or `upgrade(url)` from a deploy step), and,
from a host's own Alembic `env.py`, `upgrade(connection)` inside its migration run:

    with context.begin_transaction():
        context.run_migrations()
        migrations.upgrade(connection)

and `context.configure(..., include_object=migrations.include_object)`, so the host's
`alembic check` and `--autogenerate` leave our tables alone.

Our migrations run on a MigrationContext of their own, not through Alembic's
`command` module: that would open a second EnvironmentContext inside the host's, and
closing it removes the host's `alembic.context` proxy under its feet.

With a schema (`AppSettings.database_schema`, PostgreSQL only) every table of ours,
the version table included, lives in it: migrations create it and run with it as the
only schema on the search path; the running service reaches it through SQLAlchemy's
schema_translate_map (services/database.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, select, text
from sqlalchemy.schema import CreateSchema

from omoi_os.config import AppSettings
from omoi_os.database_schema import check_schema_supported

if TYPE_CHECKING:
    # Imported where used: importing Alembic logs its plugins at INFO, and a start-up
    # (which only reads our version table) should say nothing.
    from alembic.config import Config
    from alembic.runtime.migration import RevisionStep
    from alembic.script import ScriptDirectory

VERSION_TABLE = "omoi_alembic_version"
# Our revisions, oldest first: what start-up checks the database against without
# importing Alembic. A test keeps it equal to the scripts' own history.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
# Releases up to 0.1 kept our revision in Alembic's default table.
LEGACY_VERSION_TABLE = "alembic_version"

# Where `upgrade` and the others put our tables when no schema is passed: the
# `OMOI_DATABASE_SCHEMA` setting (unset: the connection's default schema).
FROM_SETTINGS: Any = object()

# (script, the current heads as Alembic hands them over) -> the steps to run
Steps = Callable[["ScriptDirectory", Any], Sequence["RevisionStep"]]


class SchemaNotCurrent(RuntimeError):
    """The database is not migrated to the revision this code expects."""


class SchemaCollision(SchemaNotCurrent):
    """A table of the host's own has the name of one of ours where ours would go."""

    def __init__(self, table: str, where: str, way_out: str) -> None:
        super().__init__(
            f"cannot install omoi-os in {where}: a table named {table!r} already exists "
            f"there and is not ours; {way_out}"
        )
        self.table = table


def scripts_dir() -> Path:
    """Where the Alembic scripts are (inside the installed package)."""
    return Path(str(files("omoi_os.alembic")))


def alembic_config(url: str = "") -> Config:
    """An Alembic config for our scripts (and `url`, if given); no alembic.ini needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def our_table_names() -> frozenset[str]:
    """Every table of ours, the version table included."""
    from omoi_os.models import Base  # the models: only when asked for

    return frozenset(Base.metadata.tables) | {VERSION_TABLE}


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """For a host's `context.configure(include_object=...)`: leave out the tables of
    ours its database holds (found by reflection, absent from the host's metadata),
    so its `alembic check` and `--autogenerate` neither report nor drop them. A table
    of the host's own of the same name (in its metadata) is compared as usual."""
    if type_ != "table" or not reflected or compare_to is not None:
        return True
    return name not in our_table_names()


def upgrade(
    target: str | Engine | Connection, revision: str = "head", *, schema: str | None = FROM_SETTINGS
) -> None:
    """Migrate our tables up to `revision`. `target` is a database URL, an Engine, or a
    Connection (a host's own Alembic env.py passes its migration connection: ours then
    run inside the host's transaction). `schema` defaults to OMOI_DATABASE_SCHEMA."""
    _migrate(target, lambda script, heads: script._upgrade_revs(revision, heads), schema)


def downgrade(
    target: str | Engine | Connection, revision: str = "base", *, schema: str | None = FROM_SETTINGS
) -> None:
    """Migrate our tables down to `revision`."""
    _migrate(target, lambda script, heads: script._downgrade_revs(revision, heads), schema)


def _migrate(target: str | Engine | Connection, steps: Steps, schema: str | None) -> None:
    if schema is FROM_SETTINGS:
        schema = AppSettings().database_schema
    if isinstance(target, str):
        from omoi_os.services.database import create_database_engine

        engine = create_database_engine(target)
        try:
            _migrate(engine, steps, schema)
        finally:
            engine.dispose()
        return
    if isinstance(target, Engine):
        # One transaction for the whole run, committed at the end.
        with target.begin() as connection:
            _migrate(connection, steps, schema)
        return
    if not target.in_transaction():
        # A host's env.py on a database Alembic treats as non-transactional (SQLite)
        # commits each of its revisions itself and hands us a connection with no
        # transaction: ours is then begun and committed here, or nothing would commit it.
        with target.begin():
            _migrate(target, steps, schema)
        return
    with search_path(target, schema):
        _run_steps(target, steps, schema)


def _run_steps(connection: Connection, steps: Steps, schema: str | None) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(scripts_dir()))
    adopt_legacy_version(connection, schema)
    context = MigrationContext.configure(
        connection,
        opts=migration_options(connection, schema)
        | {"fn": lambda heads, _context: steps(script, heads)},
    )
    current = context.get_current_revision()
    where = _where(connection, schema)
    refuse_newer(current, where)
    if current is None:
        refuse_collisions(connection, schema, where)
    with Operations.context(context):
        context.run_migrations()


def migration_options(connection: Connection, schema: str | None) -> dict[str, Any]:
    """The options of a MigrationContext for our history (also used by env.py)."""
    from omoi_os.models import Base

    return {
        "target_metadata": Base.metadata,
        "version_table": VERSION_TABLE,
        "version_table_schema": schema,
        "compare_type": True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        "render_as_batch": connection.dialect.name == "sqlite",
    }


@contextmanager
def search_path(connection: Connection, schema: str | None) -> Iterator[None]:
    """With a schema: create it, and make it the only schema on the search path while
    our migrations run (their CREATE TABLE and raw UPDATEs then land in it), then put
    the caller's search path back (a host's env.py may go on after us)."""
    if schema is None:
        yield
        return
    check_schema_supported(connection.dialect.name, schema)
    connection.execute(CreateSchema(schema, if_not_exists=True))
    previous = connection.execute(text("SELECT current_setting('search_path')")).scalar_one()
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
    _setsearch_path(connection, quoted)
    try:
        yield
    finally:
        _setsearch_path(connection, previous)


def _setsearch_path(connection: Connection, path: str) -> None:
    # Local to the transaction: it never outlives the migration on a pooled connection.
    connection.execute(text("SELECT set_config('search_path', :path, true)"), {"path": path})


def refuse_collisions(connection: Connection, schema: str | None, where: str) -> None:
    """SchemaCollision if a table of ours would go where the host already has one of
    that name (before our first migration there: after it, those tables are ours)."""
    existing = set(inspect(connection).get_table_names(schema=schema))
    # Our version table, empty, is what a downgrade to base leaves: ours.
    taken = sorted((our_table_names() - {VERSION_TABLE}) & existing)
    if not taken:
        return
    way_out = (
        "give omoi-os a database file of its own (OMOI_DATABASE_URL)"
        if connection.dialect.name == "sqlite"
        else "set OMOI_DATABASE_SCHEMA to put our tables in a PostgreSQL schema of their own"
    )
    raise SchemaCollision(taken[0], where, way_out)


def _where(bind: Connection | Engine, schema: str | None) -> str:
    """Where our tables are, for a message: the database, and our schema in it."""
    url = bind.engine.url.render_as_string()
    return url if schema is None else f"schema {schema} of {url}"


def head_revision() -> str:
    """The newest revision this code knows."""
    return REVISIONS[-1]


def known_revisions() -> set[str]:
    """Every revision this code knows."""
    return set(REVISIONS)


def script_revisions() -> list[str]:
    """The revisions of the scripts themselves, oldest first (what REVISIONS must be)."""
    from alembic.script import ScriptDirectory

    walked = ScriptDirectory(str(scripts_dir())).walk_revisions()
    return [script.revision for script in reversed(list(walked))]


def _version_table(schema: str | None) -> Table:
    return Table(VERSION_TABLE, MetaData(), Column("version_num", String(32)), schema=schema)


def current_revision(engine: Engine, *, schema: str | None = None) -> str | None:
    """Our revision in the database, or None if our schema was never migrated there.

    A plain read of our version table (no MigrationContext, whose set-up logs at
    INFO on every start). `engine` may carry a schema_translate_map instead of
    `schema`, as the service's does."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE, schema=_effective(connection, schema)):
            return None
        rows = connection.execute(select(_version_table(schema).c.version_num)).scalars()
        return next(iter(rows), None)


def _effective(connection: Connection, schema: str | None) -> str | None:
    """The schema a table of `schema` is in on `connection`, after its translate map."""
    translate = connection.get_execution_options().get("schema_translate_map") or {}
    return translate.get(schema, schema)


def ensure_current(engine: Engine) -> None:
    """Raise SchemaNotCurrent, saying what to do, unless our schema is at head."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    translate = engine.get_execution_options().get("schema_translate_map") or {}
    where = _where(engine, translate.get(None))
    refuse_newer(current, where)
    state = "has never been migrated" if current is None else f"is at revision {current}"
    raise SchemaNotCurrent(
        f"the database {where} {state}; this code needs {head}. "
        "Run `omoi-os migrate` (or omoi_os.migrations.upgrade) first."
    )


def refuse_newer(current: str | None, where: str) -> None:
    """SchemaNotCurrent if `current` is a revision this release does not know: a newer
    release migrated the database, and neither running nor migrating it is safe."""
    if current is not None and current not in known_revisions():
        raise SchemaNotCurrent(
            f"the database {where} is at revision {current}, which this release does not "
            f"know: it was migrated by a newer release of omoi-os (this one knows up to "
            f"{head_revision()}). Run the newer release, or restore a backup taken before "
            "it migrated."
        )


def adopt_legacy_version(connection: Connection, schema: str | None = None) -> None:
    """Carry our revision from Alembic's default table (where releases up to 0.1 kept
    it) into ours, once, inside the migration's transaction.

    Only a row that names one of our revisions, in a database that has our tables and
    no version table of ours yet, is moved; `alembic_version` is dropped if that row
    was all it held. A host's own revision there is never touched. (Releases up to
    0.1 had no schema setting: with one, there is nothing to adopt.)
    """
    if schema is not None:
        return
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables or LEGACY_VERSION_TABLE not in tables:
        return
    if "consolidation_jobs" not in tables:
        return
    legacy = text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")
    revisions = [row[0] for row in connection.execute(legacy)]
    ours = [revision for revision in revisions if revision in known_revisions()]
    if len(ours) != 1:
        return
    connection.execute(
        text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(text(f"INSERT INTO {VERSION_TABLE} VALUES (:v)"), {"v": ours[0]})
    connection.execute(
        text(f"DELETE FROM {LEGACY_VERSION_TABLE} WHERE version_num = :v"), {"v": ours[0]}
    )
    if len(revisions) == 1:
        connection.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))
