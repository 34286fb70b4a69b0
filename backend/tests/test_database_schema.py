"""Our tables where the host wants them: with OMOI_DATABASE_SCHEMA every table of ours
(the version table included) lives in that PostgreSQL schema, beside a host's own
`projects`, `task_memories`, `consolidation_jobs` and `task_queue`, which stay
untouched; without it a collision is one clear refusal that writes nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, inspect, text

from omoi_os import SchemaUnsupported, migrations, testing
from omoi_os.config import AppSettings
from omoi_os.models import JobStatus, MemoryType
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import NewMemory

SCHEMA = "omoi"
HOST_TABLES = ("projects", "task_memories", "consolidation_jobs", "task_queue")
OURS = migrations.our_table_names()


def _create_host_tables(url: str) -> None:
    """The host's own tables, named like ours but nothing like them, with a row each."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for table in HOST_TABLES:
                connection.execute(text(f"CREATE TABLE {table} (ref INTEGER, body TEXT)"))
                connection.execute(text(f"INSERT INTO {table} VALUES (7, 'host row')"))
    finally:
        engine.dispose()


def _host_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))]
                for table in HOST_TABLES
            }
    finally:
        engine.dispose()


def _tables(url: str, schema: str | None = None) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


@pytest.fixture
def host_postgres_url() -> Iterator[str]:
    """A PostgreSQL database whose `public` schema holds the host's own tables."""
    from tests.conftest import require_postgres

    require_postgres()
    with testing.scratch_database("omoi_host", migrate=False) as url:
        _create_host_tables(url)
        yield url


@pytest.mark.postgres_only
def test_our_tables_go_in_the_schema_and_the_hosts_stay_untouched(host_postgres_url: str) -> None:
    migrations.upgrade(host_postgres_url, schema=SCHEMA)

    assert _tables(host_postgres_url, SCHEMA) == OURS
    assert _tables(host_postgres_url) == set(HOST_TABLES)
    assert _host_rows(host_postgres_url) == {table: [(7, "host row")] for table in HOST_TABLES}


@pytest.mark.postgres_only
def test_a_runtime_in_the_schema_triggers_and_consolidates_there(host_postgres_url: str) -> None:
    migrations.upgrade(host_postgres_url, schema=SCHEMA)
    settings = AppSettings(
        database_url=host_postgres_url,
        database_schema=SCHEMA,
        consolidation_threshold=10,
        consolidation_cooldown=0,
    )
    runtime = ConsolidationRuntime(settings)
    try:
        migrations.ensure_current(runtime.db.engine)
        project = runtime.projects.create_sync("in its own schema")
        lesson = NewMemory(memory_type=MemoryType.LEARNING, execution_summary="lesson")
        written = [runtime.memories.create_memory_sync(project.id, lesson) for _ in range(10)]
        job_id = written[-1].triggered_job_id
        assert job_id is not None
        assert runtime.worker.run_once() is True
        assert runtime.jobs.get_sync(job_id).status is JobStatus.COMPLETED
    finally:
        runtime.close()

    assert _host_rows(host_postgres_url) == {table: [(7, "host row")] for table in HOST_TABLES}
    engine = create_engine(host_postgres_url)
    try:
        with engine.connect() as connection:
            consolidated = connection.execute(
                text(f"SELECT count(*) FROM {SCHEMA}.task_memories WHERE is_consolidated")
            ).scalar_one()
    finally:
        engine.dispose()
    assert consolidated == 10


@pytest.mark.postgres_only
def test_without_a_schema_a_host_table_is_refused_by_name_and_nothing_is_written(
    host_postgres_url: str,
) -> None:
    with pytest.raises(migrations.SchemaCollision) as refused:
        migrations.upgrade(host_postgres_url, schema=None)

    assert refused.value.table == "consolidation_jobs"
    assert "a table named 'consolidation_jobs' already exists" in str(refused.value)
    assert "set OMOI_DATABASE_SCHEMA" in str(refused.value)
    assert _tables(host_postgres_url) == set(HOST_TABLES)


def test_on_sqlite_a_host_table_is_one_clear_line(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/host.db"
    _create_host_tables(url)

    with pytest.raises(migrations.SchemaCollision) as refused:
        migrations.upgrade(url)

    assert str(refused.value) == (
        f"cannot install omoi-os in {url}: a table named 'consolidation_jobs' already "
        "exists there and is not ours; give omoi-os a database file of its own "
        "(OMOI_DATABASE_URL)"
    )
    assert _tables(url) == set(HOST_TABLES)


def test_the_command_line_says_so_in_one_line(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/host.db"
    _create_host_tables(url)

    done = subprocess.run(
        [str(Path(sys.executable).with_name("omoi-os")), "migrate"],
        env={"OMOI_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2  # the command line's exit status for a refusal
    assert done.stderr.strip().splitlines() == [
        f"omoi-os: error: cannot install omoi-os in {url}: a table named "
        "'consolidation_jobs' already exists there and is not ours; give omoi-os a "
        "database file of its own (OMOI_DATABASE_URL)"
    ]


def test_a_schema_on_sqlite_is_refused_naming_the_setting(tmp_path: object) -> None:
    settings = AppSettings(database_url=f"sqlite:///{tmp_path}/x.db", database_schema=SCHEMA)

    with pytest.raises(SchemaUnsupported, match=r"^OMOI_DATABASE_SCHEMA='omoi': "):
        DatabaseService(settings=settings)
    with pytest.raises(SchemaUnsupported):
        migrations.upgrade(settings.database_url, schema=SCHEMA)


@pytest.mark.parametrize("bad", ["1omoi", "omoi-os", "a" * 64, "omoi;drop"])
def test_a_bad_schema_name_stops_the_settings_naming_the_field(bad: str) -> None:
    with pytest.raises(ValidationError, match="database_schema") as refused:
        AppSettings(database_schema=bad)
    assert "is not a schema name" in str(refused.value)


def test_an_empty_schema_setting_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMOI_DATABASE_SCHEMA", "")
    assert AppSettings().database_schema is None
