"""Alembic: the round trip works on both databases and matches the models exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from omoi_os import migrations
from omoi_os.models import Base
from omoi_os.services.database import DatabaseService

from .conftest import create_postgres_database, drop_postgres_database

TABLES = {
    "projects",
    "task_memories",
    "consolidation_jobs",
    "consolidation_ticks",
    "task_queue",
    "alembic_version",
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
    assert _tables(empty_database_url) == {"alembic_version"}

    migrations.upgrade(empty_database_url)
    assert _tables(empty_database_url) == TABLES


def test_models_and_migrated_schema_do_not_drift(database_url: str) -> None:
    service = DatabaseService(database_url)
    try:
        with service.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
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
        else create_postgres_database("omoi_reference")
    )
    try:
        service = DatabaseService(reference)
        Base.metadata.create_all(service.engine)
        service.dispose()
        migrated, expected = _indexes_and_checks(empty_database_url), _indexes_and_checks(reference)
    finally:
        if not reference.startswith("sqlite"):
            drop_postgres_database(reference)

    migrated.pop("alembic_version_pkc", None)
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
