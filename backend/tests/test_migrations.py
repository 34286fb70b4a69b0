"""Alembic: the round trip works on both databases and matches the models exactly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from omoi_os import migrations, testing
from omoi_os.models import Base, Project, TaskMemory
from omoi_os.services.database import DatabaseService

TABLES = {
    "projects",
    "task_memories",
    "consolidation_jobs",
    "consolidation_ticks",
    "consolidation_schedule_pause",
    "task_queue",
    migrations.VERSION_TABLE,
}


def _tables(url: str) -> set[str]:
    service = DatabaseService(url)
    try:
        return set(inspect(service.engine).get_table_names())
    finally:
        service.dispose()


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str) -> None:
    migrations.upgrade(empty_database_url)
    assert _tables(empty_database_url) == TABLES

    migrations.downgrade(empty_database_url)
    assert _tables(empty_database_url) == {migrations.VERSION_TABLE}

    migrations.upgrade(empty_database_url)
    assert _tables(empty_database_url) == TABLES


def test_models_and_migrated_schema_do_not_drift(database_url: str) -> None:
    service = DatabaseService(database_url)
    try:
        with service.engine.connect() as connection:
            options = {"compare_type": True, "version_table": migrations.VERSION_TABLE}
            context = MigrationContext.configure(connection, opts=options)
            differences = compare_metadata(context, Base.metadata)
    finally:
        service.dispose()

    assert differences == []


def _indexes_and_checks(url: str) -> dict[str, str]:
    """Every index and CHECK constraint as the database itself spells it (partial-index
    predicates included, which Alembic's comparison does not look at)."""
    service = DatabaseService(url)
    try:
        with service.engine.connect() as connection:
            if service.dialect == "postgresql":
                rows = connection.exec_driver_sql(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                    "UNION ALL SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE contype = 'c'"
                ).all()
                return {name: definition for name, definition in rows}
            rows = connection.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            ).all()
    finally:
        service.dispose()
    definitions: dict[str, str] = {}
    for name, sql in rows:
        if sql.upper().startswith("CREATE INDEX") or sql.upper().startswith("CREATE UNIQUE"):
            definitions[name] = _normalised(sql)
        for check, body in re.findall(r"CONSTRAINT (\w+) CHECK \((.*?)\)(?:,|\n)", sql):
            definitions[check] = _normalised(body)
    return definitions


def _normalised(sql: str) -> str:
    return " ".join(sql.replace('"', "").split())


def test_migrated_indexes_and_checks_match_the_models_exactly(
    empty_database_url: str, tmp_path: Path
) -> None:
    """The invariants live in partial unique indexes and CHECKs: compare them with a
    schema made from the models by create_all, as the database reports both."""
    migrations.upgrade(empty_database_url)
    reference = (
        f"sqlite:///{tmp_path / 'reference.db'}"
        if empty_database_url.startswith("sqlite")
        else testing.create_database("omoi_reference")
    )
    try:
        service = DatabaseService(reference)
        Base.metadata.create_all(service.engine)
        service.dispose()
        migrated, expected = _indexes_and_checks(empty_database_url), _indexes_and_checks(reference)
    finally:
        if not reference.startswith("sqlite"):
            testing.drop_database(reference)

    migrated.pop(f"{migrations.VERSION_TABLE}_pkc", None)
    assert migrated == expected
    assert "uq_consolidation_jobs_one_active_per_project" in migrated
    assert "ck_task_queue_max_attempts_positive" in migrated
    assert "'pending'" in migrated["uq_consolidation_jobs_one_active_per_project"]


def test_ensure_current_names_the_fix_on_an_unmigrated_database(empty_database_url: str) -> None:
    service = DatabaseService(empty_database_url)
    try:
        with pytest.raises(
            migrations.SchemaNotCurrent, match=r"never been migrated.*omoi-os migrate"
        ):
            migrations.ensure_current(service.engine)

        migrations.upgrade(empty_database_url)
        migrations.ensure_current(service.engine)
        assert migrations.current_revision(service.engine) == migrations.head_revision()
    finally:
        service.dispose()


# --- living beside a host's own Alembic history ----------------------------------------


def _execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    service = DatabaseService(url)
    try:
        with service.transaction() as session:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = session.execute(text(statement))
                rows = [tuple(row) for row in result] if result.returns_rows else []
            return rows
    finally:
        service.dispose()


def test_a_hosts_alembic_version_is_never_read_or_written(empty_database_url: str) -> None:
    _execute(
        empty_database_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('host_b7f3a9')",
    )

    migrations.upgrade(empty_database_url)

    assert _execute(empty_database_url, "SELECT version_num FROM alembic_version") == [
        ("host_b7f3a9",)
    ]
    assert _tables(empty_database_url) == TABLES | {"alembic_version"}
    service = DatabaseService(empty_database_url)
    assert migrations.current_revision(service.engine) == migrations.head_revision()
    service.dispose()


def test_a_database_of_the_previous_release_is_carried_over_without_losing_a_row(
    empty_database_url: str,
) -> None:
    # The previous release kept our revision in alembic_version: make exactly that.
    migrations.upgrade(empty_database_url, "0001")
    _execute(
        empty_database_url,
        f"DROP TABLE {migrations.VERSION_TABLE}",
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        "INSERT INTO alembic_version VALUES ('0001')",
        "INSERT INTO projects (id, name, is_active, created_at) "
        "VALUES ('0c6f3b1e5d2a4f8e9a7b1c3d5e7f9a0b', 'kept', true, '2026-01-01 00:00:00')",
    )
    service = DatabaseService(empty_database_url)
    with pytest.raises(migrations.SchemaNotCurrent, match="never been migrated"):
        migrations.ensure_current(service.engine)

    migrations.upgrade(empty_database_url)

    migrations.ensure_current(service.engine)
    service.dispose()
    assert _tables(empty_database_url) == TABLES  # alembic_version held only ours: dropped
    assert _execute(empty_database_url, "SELECT name FROM projects") == [("kept",)]


def test_a_host_migrates_us_from_its_own_env_py_connection(empty_database_url: str) -> None:
    service = DatabaseService(empty_database_url)
    with service.engine.begin() as connection:  # the host's migration transaction
        connection.execute(text("CREATE TABLE host_things (id INTEGER PRIMARY KEY)"))
        migrations.upgrade(connection)
    migrations.ensure_current(service.engine)
    service.dispose()

    assert _tables(empty_database_url) == TABLES | {"host_things"}


def test_a_database_from_a_newer_release_is_named_as_such(database_url: str) -> None:
    _execute(database_url, f"UPDATE {migrations.VERSION_TABLE} SET version_num = 'omoi9999'")
    service = DatabaseService(database_url)
    try:
        with pytest.raises(migrations.SchemaNotCurrent, match="newer release of omoi-os"):
            migrations.ensure_current(service.engine)
    finally:
        service.dispose()
        # Back to the head: later tests share this database and need its current schema.
        _execute(
            database_url,
            f"UPDATE {migrations.VERSION_TABLE} SET version_num = '{migrations.head_revision()}'",
        )


def test_the_scripts_are_found_inside_the_package() -> None:
    assert migrations.scripts_dir().name in ("migrations", "alembic")
    assert (migrations.scripts_dir() / "env.py").is_file()
    assert "0001" in migrations.known_revisions()


def test_the_cooldown_of_existing_projects_is_carried_from_their_last_finished_job(
    empty_database_url: str,
) -> None:
    migrations.upgrade(empty_database_url, "0001")
    _execute(
        empty_database_url,
        "INSERT INTO projects (id, name, is_active, created_at) "
        "VALUES ('0c6f3b1e5d2a4f8e9a7b1c3d5e7f9a0b', 'kept', true, '2026-01-01 00:00:00')",
        "INSERT INTO consolidation_jobs (project_id, trigger_type, scope, status, "
        "triggered_by, created_at, finished_at) VALUES ('0c6f3b1e5d2a4f8e9a7b1c3d5e7f9a0b', "
        "'manual', '{}', 'completed', 't', '2026-01-01 00:00:00', '2026-01-02 03:04:05')",
    )

    migrations.upgrade(empty_database_url)

    service = DatabaseService(empty_database_url)
    with service.read() as session:
        project = session.scalars(select(Project)).one()
    service.dispose()
    assert project.cooldown_from == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert project.threshold_crossed_at is None


def test_tier_expiry_is_backfilled_from_when_each_tier_was_set(empty_database_url: str) -> None:
    migrations.upgrade(empty_database_url, "0002")
    project = "'0c6f3b1e5d2a4f8e9a7b1c3d5e7f9a0b'"
    columns = (
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated, consolidated_at, tier) VALUES "
    )
    _execute(
        empty_database_url,
        f"INSERT INTO projects (id, name, is_active, created_at) "
        f"VALUES ({project}, 'kept', true, '2026-01-01 00:00:00')",
        # tiered at 5 days old, at 40 days old, at 100 days old; and never tiered
        columns + f"({project}, 'learning', 'a', true, 0, '2026-01-01 10:00:00.250000', "
        "true, '2026-01-06 10:00:00', 'hot')",
        columns + f"({project}, 'learning', 'b', true, 1, '2026-01-01 10:00:00.250000', "
        "true, '2026-02-10 10:00:00', 'warm')",
        columns + f"({project}, 'learning', 'c', true, 2, '2026-01-01 10:00:00.250000', "
        "true, '2026-04-11 10:00:00', 'cold')",
        columns + f"({project}, 'learning', 'd', true, 3, '2026-01-01 10:00:00.250000', "
        "false, NULL, NULL)",
    )

    migrations.upgrade(empty_database_url)

    service = DatabaseService(empty_database_url)
    with service.read() as session:
        statement = select(TaskMemory.tier_expires_at).order_by(TaskMemory.reused_count)
        expiries = list(session.scalars(statement))
    service.dispose()
    learned = datetime(2026, 1, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert expiries == [learned + timedelta(days=30), learned + timedelta(days=90), None, None]


def test_memories_and_jobs_survive_0004_and_keep_their_job_id_once_it_is_deleted(
    empty_database_url: str,
) -> None:
    """0004 copies task_memories on SQLite to drop its foreign key to the jobs; no
    memory or job may be lost on the way (dropping a referenced table would cascade),
    and a memory keeps the id of its job after retention deletes that job."""
    migrations.upgrade(empty_database_url, "0003")
    project = "'0c6f3b1e5d2a4f8e9a7b1c3d5e7f9a0b'"
    _execute(
        empty_database_url,
        f"INSERT INTO projects (id, name, is_active, created_at) "
        f"VALUES ({project}, 'kept', true, '2026-01-01 00:00:00')",
        "INSERT INTO consolidation_jobs (id, project_id, trigger_type, scope, status, "
        f"triggered_by, created_at, finished_at) VALUES (7, {project}, 'manual', '{{}}', "
        "'completed', 't', '2026-01-01 00:00:00', '2026-01-02 00:00:00')",
        "INSERT INTO task_memories (project_id, memory_type, execution_summary, success, "
        "reused_count, learned_at, is_consolidated, consolidated_at, consolidation_job_id, "
        f"tier) VALUES ({project}, 'learning', 'a', true, 0, '2026-01-01 10:00:00', true, "
        "'2026-01-02 00:00:00', 7, 'hot')",
    )

    migrations.upgrade(empty_database_url)
    _execute(empty_database_url, "DELETE FROM consolidation_jobs WHERE id = 7")

    service = DatabaseService(empty_database_url)
    with service.read() as session:
        memory = session.scalars(select(TaskMemory)).one()
        projects = session.scalars(select(Project)).all()
    service.dispose()
    assert len(projects) == 1
    assert (memory.consolidation_job_id, memory.tier, memory.is_consolidated) == (7, "hot", True)


def test_0006_gives_each_job_retried_before_it_its_first_retry(empty_database_url: str) -> None:
    """Before 0006 a failure could be retried many times; each such job keeps its
    first retry as the one (the later ones still name it in retry_of_id)."""
    migrations.upgrade(empty_database_url, "0005")
    project = "'0c6f3b1e5d2a4f8e9a7b1c3d5e7f9a0b'"
    jobs = [  # id, status, retry_of_id
        (3, "failed", "NULL"),
        (5, "completed", 3),
        (6, "failed", 3),
        (8, "timed_out", "NULL"),
        (9, "completed", 6),
    ]
    _execute(
        empty_database_url,
        f"INSERT INTO projects (id, name, is_active, created_at) "
        f"VALUES ({project}, 'kept', true, '2026-01-01 00:00:00')",
        *(
            "INSERT INTO consolidation_jobs (id, project_id, trigger_type, scope, status, "
            f"triggered_by, created_at, finished_at, retry_of_id) VALUES ({id_}, {project}, "
            f"'manual', '{{}}', '{status}', 't', '2026-01-01 00:00:00', "
            f"'2026-01-02 00:00:00', {retry_of})"
            for id_, status, retry_of in jobs
        ),
    )

    migrations.upgrade(empty_database_url)

    service = DatabaseService(empty_database_url)
    with service.read() as session:
        rows = session.execute(
            text("SELECT id, retried_by_id FROM consolidation_jobs ORDER BY id")
        ).all()
    service.dispose()
    assert [tuple(row) for row in rows] == [(3, 5), (5, None), (6, 9), (8, None), (9, None)]


def test_the_revisions_start_up_knows_are_the_scripts_own() -> None:
    assert list(migrations.REVISIONS) == migrations.script_revisions()


def test_a_start_up_logs_nothing_of_alembic(database_url: str) -> None:
    """Importing the runtime and checking the schema never imports Alembic (its import
    logs its plugins at INFO): checked in a fresh interpreter, with logging at INFO."""
    import subprocess
    import sys

    program = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from omoi_os import AppSettings, ConsolidationRuntime, migrations\n"
        f"runtime = ConsolidationRuntime(AppSettings(database_url={database_url!r}))\n"
        "migrations.ensure_current(runtime.db.engine)\n"
        "runtime.close()\n"
        "print('alembic imported:', 'alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )

    assert (done.returncode, done.stdout, done.stderr) == (0, "alembic imported: False\n", "")
