"""Our migrations inside a host's own Alembic project, for real: `alembic init`'s own
env.py with the README's recipe (inside `context.begin_transaction()`, after
`context.run_migrations()`, `migrations.upgrade(connection)`) and filter
(`include_object=migrations.include_object`). `alembic upgrade head`, `alembic check`
and `alembic downgrade base` exit 0 on both databases; with OMOI_DATABASE_SCHEMA our
tables sit beside the host's own `projects` and `task_memories`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from omoi_os import migrations, testing

ALEMBIC = str(Path(sys.executable).with_name("alembic"))

# The host's models; the revisions below create exactly these (so its check is clean).
HOST_MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table("{first}", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("title", sa.String(80), nullable=False))
sa.Table("{second}", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("body", sa.Text, nullable=True))
"""

HOST_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("{column}", {type}, nullable={nullable}))


def downgrade():
    op.drop_table("{table}")
"""


def _host_project(root: Path, url: str, tables: tuple[str, str]) -> Path:
    """`alembic init`, then the README's three lines in its env.py, two host revisions
    and the host's models."""
    _alembic(root, "init", "migrations")
    env = root / "migrations" / "env.py"
    source = env.read_text()
    configure = "connection=connection, target_metadata=target_metadata\n"
    edits = {
        "target_metadata = None": "from host_models import metadata as target_metadata\n"
        "from omoi_os import migrations",
        configure: configure.rstrip() + ",\n"
        "            include_object=migrations.include_object,\n",
    }
    for before, after in edits.items():
        assert source.count(before) == 1, before
        source = source.replace(before, after)
    online = source.index("def run_migrations_online")
    call = "            context.run_migrations()\n"
    at = source.index(call, online) + len(call)
    source = source[:at] + "            migrations.upgrade(connection)\n" + source[at:]
    env.write_text(source)
    ini = root / "alembic.ini"
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", url))
    (root / "host_models.py").write_text(HOST_MODELS.format(first=tables[0], second=tables[1]))
    versions = root / "migrations" / "versions"
    for revision, down, table, column, type_, nullable in (
        ("h1", None, tables[0], "title", "sa.String(80)", False),
        ("h2", '"h1"', tables[1], "body", "sa.Text", True),
    ):
        (versions / f"{revision}.py").write_text(
            HOST_REVISION.format(
                revision=revision,
                down=down,
                table=table,
                column=column,
                type=type_,
                nullable=nullable,
            )
        )
    return root


def _alembic(root: Path, *args: str, schema: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMOI_")}
    env["PYTHONPATH"] = str(root)
    if schema is not None:
        env["OMOI_DATABASE_SCHEMA"] = schema
    done = subprocess.run(
        [ALEMBIC, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"alembic {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done


def _tables(url: str, schema: str | None = None) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def _revisions(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text(f"SELECT version_num FROM {table}"))]
    finally:
        engine.dispose()


@pytest.fixture
def host_url(empty_database_url: str) -> Iterator[str]:
    yield empty_database_url


def test_the_recipe_in_a_real_host_project(host_url: str, tmp_path: Path) -> None:
    root = _host_project(tmp_path, host_url, ("workspaces", "lessons"))
    ours = migrations.our_table_names()

    _alembic(root, "upgrade", "head")
    assert _tables(host_url) == ours | {"workspaces", "lessons", "alembic_version"}
    assert _revisions(host_url, "alembic_version") == ["h2"]
    assert _revisions(host_url, migrations.VERSION_TABLE) == [migrations.head_revision()]

    checked = _alembic(root, "check")
    assert "No new upgrade operations detected." in checked.stdout + checked.stderr

    _alembic(root, "downgrade", "base")
    assert _tables(host_url) == ours | {"alembic_version"}
    assert _revisions(host_url, "alembic_version") == []
    assert _revisions(host_url, migrations.VERSION_TABLE) == [migrations.head_revision()]

    _alembic(root, "upgrade", "head")  # and back: ours already at head, the host's again
    assert _revisions(host_url, "alembic_version") == ["h2"]


@pytest.mark.postgres_only
def test_the_recipe_beside_a_hosts_own_projects_in_a_schema(tmp_path: Path) -> None:
    from tests.conftest import require_postgres

    require_postgres()
    with testing.scratch_database("omoi_host_alembic", migrate=False) as url:
        root = _host_project(tmp_path, url, ("projects", "task_memories"))

        _alembic(root, "upgrade", "head", schema="omoi")
        assert _tables(url) == {"projects", "task_memories", "alembic_version"}
        assert _tables(url, "omoi") == migrations.our_table_names()

        checked = _alembic(root, "check", schema="omoi")
        assert "No new upgrade operations detected." in checked.stdout + checked.stderr

        _alembic(root, "downgrade", "base", schema="omoi")
        assert _tables(url) == {"alembic_version"}
        assert _tables(url, "omoi") == migrations.our_table_names()


def test_include_object_leaves_out_only_reflected_tables_of_ours() -> None:
    include = migrations.include_object
    assert include(None, "projects", "table", True, None) is False
    assert include(None, migrations.VERSION_TABLE, "table", True, None) is False
    assert include(None, "projects", "table", False, object()) is True  # the host's own
    assert include(None, "projects", "table", True, object()) is True
    assert include(None, "workspaces", "table", True, None) is True
    assert include(None, "ix_task_queue_claim", "index", True, None) is True
