"""Shared fixtures: every database test runs on SQLite and on PostgreSQL, on a schema
made by Alembic (never create_all). PostgreSQL must be reachable: an unreachable
server fails the run unless OMOI_TEST_SKIP_POSTGRES=1 is set outside CI."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from omoi_os import migrations, testing
from omoi_os.config import get_app_settings
from omoi_os.models import Base
from omoi_os.services.database import DatabaseService
from tests.support.clocks import FakeClock, quiet_schedule
from tests.support.factories import T0, Factories

DATABASES = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads the developer's OMOI_* variables, .env or data directory, and no
    test sees a scheduled tick it did not set up."""
    for name in list(os.environ):
        if name.startswith("OMOI_") and name != "OMOI_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    # No test waits on the wall clock reaching the default 02:00 tick, nor catches it up.
    monkeypatch.setenv("OMOI_CONSOLIDATION_SCHEDULE", quiet_schedule())
    monkeypatch.chdir(tmp_path)
    get_app_settings.cache_clear()
    yield
    get_app_settings.cache_clear()


# --- PostgreSQL -------------------------------------------------------------------


def require_postgres() -> None:
    """Fail (or, outside CI with OMOI_TEST_SKIP_POSTGRES=1, skip) without PostgreSQL."""
    try:
        testing.admin_execute("SELECT 1")
    except psycopg.OperationalError as exc:
        message = (
            f"PostgreSQL is not reachable at {testing.admin_url()} ({exc}). Start it "
            "(see README) or, outside CI only, set OMOI_TEST_SKIP_POSTGRES=1."
        )
        if os.environ.get("OMOI_TEST_SKIP_POSTGRES") == "1" and os.environ.get("CI") != "true":
            pytest.skip(message)
        pytest.fail(message)


@pytest.fixture(scope="session")
def migrated_postgres_url() -> Iterator[str]:
    """One migrated PostgreSQL database for the whole run, emptied after each test."""
    require_postgres()
    with testing.scratch_database() as url:
        yield url


def _truncate_all(url: str) -> None:
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    service = DatabaseService(url)
    try:
        with service.transaction() as session:
            session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        service.dispose()


# --- SQLite -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies instead of migrating again."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    url = f"sqlite:///{path}"
    migrations.upgrade(url)
    service = DatabaseService(url)
    raw = service.engine.raw_connection()  # autocommit: a checkpoint cannot run in a transaction
    raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    service.dispose()
    return path


# --- What tests use -----------------------------------------------------------------


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "omoi_test.db"
        shutil.copy(request.getfixturevalue("migrated_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("migrated_postgres_url")
    yield url
    _truncate_all(url)


@pytest.fixture(params=DATABASES)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each kind with no tables at all (for migration tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require_postgres()
    with testing.scratch_database("omoi_empty", migrate=False) as url:
        yield url


@pytest.fixture
def postgres_url(migrated_postgres_url: str) -> Iterator[str]:
    """The migrated PostgreSQL database alone, for tests of what only it has
    (row locks under real concurrency, NOTIFY). They carry the postgres_only mark."""
    yield migrated_postgres_url
    _truncate_all(migrated_postgres_url)


@pytest.fixture
def db(database_url: str) -> Iterator[DatabaseService]:
    service = DatabaseService(database_url)
    yield service
    service.dispose()


@pytest.fixture
def factories(db: DatabaseService) -> Factories:
    return Factories(db)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests ran against each database, so a run that silently lost
    PostgreSQL is visible at a glance."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome != "error":
                continue
            params = re.findall(r"[\w.]+", report.nodeid.partition("[")[2])
            marked = "postgres_only" in getattr(report, "keywords", {})
            kind = (
                "postgresql"
                if "postgresql" in params or marked
                else ("sqlite" if "sqlite" in params else None)
            )
            if kind:
                counts.setdefault(kind, {}).setdefault(outcome, 0)
                counts[kind][outcome] += 1
    for kind in DATABASES:
        tally = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.get(kind, {}).items()))
        terminalreporter.write_line(f"{kind} tests: {tally or 'none ran'}")
