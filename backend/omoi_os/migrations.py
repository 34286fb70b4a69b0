"""Our schema's migrations, driven from code.

The Alembic scripts ship inside the package (`omoi_os.alembic`, built from
backend/migrations), so an installed wheel migrates from any directory. Our history
keeps its revision in its own table, `omoi_alembic_version`: a host application's
own Alembic history, in `alembic_version`, is never read or written.

Two ways to migrate: `omoi-os migrate` (or `upgrade(url)` from a deploy step), and,
from a host's own Alembic `env.py`, `upgrade(connection)` inside its migration run.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

VERSION_TABLE = "omoi_alembic_version"
# Releases up to 0.1 kept our revision in Alembic's default table.
LEGACY_VERSION_TABLE = "alembic_version"


class SchemaNotCurrent(RuntimeError):
    """The database is not migrated to the revision this code expects."""


def scripts_dir() -> Path:
    """Where the Alembic scripts are (inside the installed package)."""
    return Path(str(files("omoi_os.alembic")))


def alembic_config(url: str = "") -> Config:
    """An Alembic config for our scripts (and `url`, if given); no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(target: str | Engine | Connection, revision: str = "head") -> None:
    """Migrate our tables up to `revision`. `target` is a database URL, an Engine, or a
    Connection (a host's own Alembic env.py passes its migration connection: ours then
    run inside the host's transaction)."""
    _run(command.upgrade, target, revision)


def downgrade(target: str | Engine | Connection, revision: str = "base") -> None:
    """Migrate our tables down to `revision`."""
    _run(command.downgrade, target, revision)


def _run(
    step: Callable[[Config, str], None], target: str | Engine | Connection, revision: str
) -> None:
    if isinstance(target, str):
        step(alembic_config(target), revision)
        return
    if isinstance(target, Engine):
        with target.begin() as connection:
            _run(step, connection, revision)
        return
    config = alembic_config()
    config.attributes["connection"] = target
    step(config, revision)


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory(str(scripts_dir())).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {scripts_dir()}")
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory(str(scripts_dir())).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """Our revision in the database, or None if our schema was never migrated there."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def ensure_current(engine: Engine) -> None:
    """Raise SchemaNotCurrent, saying what to do, unless our schema is at head."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = engine.url.render_as_string()
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


def adopt_legacy_version(connection: Connection) -> None:
    """Carry our revision from Alembic's default table (where releases up to 0.1 kept
    it) into ours, once, inside the migration's transaction.

    Only a row that names one of our revisions, in a database that has our tables and
    no version table of ours yet, is moved; `alembic_version` is dropped if that row
    was all it held. A host's own revision there is never touched.
    """
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
