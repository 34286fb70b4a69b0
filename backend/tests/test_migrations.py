"""Alembic: the round trip works on both databases and matches the models exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from omoi_os import migrations
from omoi_os.models import Base
from omoi_os.services.database import DatabaseService

TABLES = {"projects", "task_memories", "consolidation_jobs", "task_queue", "alembic_version"}


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
