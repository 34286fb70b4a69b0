"""DatabaseService and the invariants the schema itself enforces."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from omoi_os.config import AppSettings
from omoi_os.models import ConsolidationJob, JobStatus, Project, TriggerType
from omoi_os.services.database import DatabaseService
from tests.support.factories import T0, Factories
from tests.support.servers import run_python


def test_default_database_service_gives_a_working_session(tmp_path: Path) -> None:
    # The first half of the task card's verification script: no arguments at all.
    db = DatabaseService()
    try:
        session = db.get_session()
        assert session.execute(text("SELECT 1")).scalar_one() == 1
        session.close()
    finally:
        db.dispose()

    assert db.url == f"sqlite:///{tmp_path}/xdg-data/omoi-os/omoi_os.db"
    assert (tmp_path / "xdg-data" / "omoi-os" / "omoi_os.db").exists()


def test_verification_snippet_first_half_in_a_fresh_interpreter(tmp_path: Path) -> None:
    snippet = (
        "from omoi_os.services.database import DatabaseService\n"
        "db = DatabaseService()\n"
        "from sqlalchemy import text\n"
        "print(db.get_session().execute(text('SELECT 42')).scalar_one())\n"
    )
    result = run_python(snippet, cwd=tmp_path, home=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    db = DatabaseService(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with db.engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == 30_000
            assert pragma("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()


def test_transaction_commits_or_rolls_back(db: DatabaseService, factories: Factories) -> None:
    with db.transaction() as session:
        session.add(Project(name="kept", created_at=T0))
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.add(Project(name="rolled back", created_at=T0))
        session.flush()
        raise RuntimeError("boom")

    with db.get_session() as session:
        assert session.scalars(select(Project.name)).all() == ["kept"]


def test_a_session_lends_only_its_engine(db: DatabaseService) -> None:
    session = db.get_session()
    borrowed = DatabaseService.for_session(session)

    with borrowed.get_session() as other:
        assert other is not session
        assert other.get_bind() is db.engine
    borrowed.dispose()  # not its engine: stays usable
    assert session.execute(text("SELECT 1")).scalar_one() == 1
    session.close()


def test_a_host_engine_is_used_and_never_disposed(database_url: str) -> None:
    host = DatabaseService(database_url)
    ours = DatabaseService.from_engine(host.engine)

    with ours.transaction() as session:
        session.add(Project(name="via the host's pool", created_at=T0))
    ours.dispose()

    assert host.engine.pool.checkedin() >= 1  # the host's pooled connection survived
    with host.read() as session:
        assert session.scalars(select(Project.name)).all() == ["via the host's pool"]
    host.dispose()


def test_building_a_sqlite_service_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "later" / "x.db"
    db = DatabaseService(f"sqlite:///{path}")

    assert not path.parent.exists()
    db.ping()
    assert path.exists()
    db.dispose()


def test_sqlite_ping_does_not_wait_for_the_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    db = DatabaseService(url)
    with db.transaction() as session:  # holds BEGIN IMMEDIATE: the write lock
        session.execute(text("CREATE TABLE t (x INTEGER)"))
        other = DatabaseService(url)
        other.ping()  # answers at once instead of waiting the 30 s busy timeout
        other.dispose()
    db.dispose()


def test_one_active_job_per_project_is_enforced_by_the_database(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    factories.job(project.id, status=JobStatus.PENDING)

    with pytest.raises(IntegrityError):
        factories.job(project.id, status=JobStatus.RUNNING)
    # Finished jobs do not count: any number may sit beside the active one.
    factories.job(project.id, status=JobStatus.COMPLETED)
    factories.job(project.id, status=JobStatus.FAILED)

    assert factories.count(ConsolidationJob) == 3


def test_one_scheduled_job_per_project_per_tick(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    tick = T0 + timedelta(hours=2)
    factories.job(
        project.id,
        trigger_type=TriggerType.SCHEDULED,
        scheduled_for=tick,
        status=JobStatus.COMPLETED,
    )

    with pytest.raises(IntegrityError):
        factories.job(
            project.id,
            trigger_type=TriggerType.SCHEDULED,
            scheduled_for=tick,
            status=JobStatus.COMPLETED,
        )
    factories.job(
        project.id, trigger_type=TriggerType.SCHEDULED, scheduled_for=tick + timedelta(days=1)
    )

    assert factories.count(ConsolidationJob) == 2


def test_datetimes_come_back_aware_and_utc(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    job = factories.job(project.id, created_at=T0)

    with db.get_session() as session:
        stored = session.get(ConsolidationJob, job.id)
        assert stored is not None
        assert stored.created_at == T0
        assert stored.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_pool_holds_what_the_settings_say_and_never_overflows(
    kind: str, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'p.db'}"
        if kind == "sqlite"
        else "postgresql+psycopg://u@127.0.0.1/never_connected"
    )
    settings = AppSettings(database_url=url, worker_concurrency=32, database_api_connections=5)
    db = DatabaseService(settings=settings)

    assert db.engine.pool.size() == 2 * 32 + 2 + 5  # type: ignore[attr-defined]
    assert db.engine.pool._max_overflow == 0  # type: ignore[attr-defined]
    db.dispose()
