"""A host on an async engine: `ConsolidationRuntime(engine=async_engine)` starts and
runs; projects are keyed by the host's identifiers (`projects.ensure`, one per key even
under concurrency); memories are added inside the host's own `AsyncSession` (a rolled
back one leaves nothing) and cross the threshold with `after_write` once committed."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from omoi_os import AppSettings, ConsolidationRuntime, MemoryType, NewMemory, ProjectNotFound
from omoi_os.models import JobStatus, Project, TaskMemory
from omoi_os.services.database import DatabaseService

ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg_async"}


def lesson(number: int) -> NewMemory:
    return NewMemory(
        memory_type=MemoryType.LEARNING,
        execution_summary=f"lesson {number}",
        metadata={"host_lesson_id": number},
    )


def _async_url(url: str, driver: str | None = None) -> str:
    parsed = make_url(url)
    drivername = driver or ASYNC_DRIVERS[parsed.get_backend_name()]
    return parsed.set(drivername=drivername).render_as_string(hide_password=False)


@pytest_asyncio.fixture
async def async_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The host's async engine on a migrated database, with a table of its own."""
    engine = create_async_engine(_async_url(database_url))
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE host_lessons (id INTEGER, body TEXT)"))
    yield engine
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE host_lessons"))
    await engine.dispose()


@pytest.fixture
def runtime(async_engine: AsyncEngine) -> Iterator[ConsolidationRuntime]:
    settings = AppSettings(consolidation_threshold=10, consolidation_cooldown=0)
    built = ConsolidationRuntime(settings, engine=async_engine)
    yield built
    built.close()


def _count(db: DatabaseService, model: type[Project] | type[TaskMemory]) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


async def _host_lesson_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(text("SELECT count(*) FROM host_lessons"))).scalar_one()


@pytest.mark.asyncio
async def test_an_async_host_ensures_adds_and_crosses_the_threshold(
    runtime: ConsolidationRuntime, async_engine: AsyncEngine
) -> None:
    async with runtime.lifespan():
        project = await runtime.projects.ensure("workspace-42", name="Workspace 42")
        assert (await runtime.projects.ensure("workspace-42")).id == project.id
        checks = []
        for number in range(10):
            async with AsyncSession(async_engine) as session, session.begin():
                await session.execute(
                    text("INSERT INTO host_lessons VALUES (:id, 'x')"), {"id": number}
                )
                await runtime.memories.add(session, project.id, lesson(number))
            checks.append(await runtime.memories.after_write(project.id))

    assert [check.triggered_job_id for check in checks[:9]] == [None] * 9
    job_id = checks[9].triggered_job_id
    assert job_id is not None and not checks[9].failed
    job = runtime.jobs.get_sync(job_id)
    assert (job.project_id, job.trigger_type.value) == (project.id, "threshold")
    assert job.status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED)
    assert (project.external_key, project.name) == ("workspace-42", "Workspace 42")
    assert await _host_lesson_count(async_engine) == 10
    with runtime.db.read() as session:
        stored = session.scalars(select(TaskMemory.memory_metadata).order_by(TaskMemory.id))
        assert list(stored) == [{"host_lesson_id": number} for number in range(10)]


@pytest.mark.asyncio
async def test_a_rolled_back_host_transaction_leaves_nothing_of_ours(
    runtime: ConsolidationRuntime, async_engine: AsyncEngine
) -> None:
    project = await runtime.projects.ensure("workspace-7")

    with pytest.raises(RuntimeError, match="the host's route failed"):
        async with AsyncSession(async_engine) as session, session.begin():
            await session.execute(text("INSERT INTO host_lessons VALUES (1, 'x')"))
            await runtime.memories.add(session, project.id, lesson(1))
            raise RuntimeError("the host's route failed")

    assert _count(runtime.db, TaskMemory) == 0
    assert await _host_lesson_count(async_engine) == 0


@pytest.mark.asyncio
async def test_an_unknown_project_adds_nothing_and_the_hosts_transaction_goes_on(
    runtime: ConsolidationRuntime, async_engine: AsyncEngine
) -> None:
    unknown = uuid.uuid4()

    async with AsyncSession(async_engine) as session, session.begin():
        with pytest.raises(ProjectNotFound, match=f"^project {unknown} does not exist$"):
            await runtime.memories.add(session, unknown, lesson(1))
        await session.execute(text("INSERT INTO host_lessons VALUES (1, 'kept')"))

    assert _count(runtime.db, TaskMemory) == 0
    assert await _host_lesson_count(async_engine) == 1
    check = await runtime.memories.after_write(unknown)
    assert (check.triggered_job_id, check.failed, check.unknown_project) == (None, False, True)


def test_a_sync_host_adds_in_its_own_session(database_url: str) -> None:
    runtime = ConsolidationRuntime(AppSettings(database_url=database_url))
    try:
        project = runtime.projects.ensure_sync("repo/alpha")
        with runtime.db.transaction() as session:
            memory_id = runtime.memories.add_sync(session, project.id, lesson(3))
        with runtime.db.read() as session:
            stored = session.get(TaskMemory, memory_id)
            assert stored is not None
            assert (stored.project_id, stored.memory_metadata) == (
                project.id,
                {"host_lesson_id": 3},
            )
    finally:
        runtime.close()


def test_concurrent_ensures_of_one_key_make_one_project(database_url: str) -> None:
    runtime = ConsolidationRuntime(AppSettings(database_url=database_url))
    start = threading.Barrier(8)
    found: list[uuid.UUID] = []

    def ensure() -> None:
        start.wait()
        found.append(runtime.projects.ensure_sync("shared-key").id)

    threads = [threading.Thread(target=ensure) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(found) == 8 and len(set(found)) == 1
        assert _count(runtime.db, Project) == 1
    finally:
        runtime.close()


@pytest.mark.postgres_only
@pytest.mark.asyncio
async def test_an_asyncpg_host_works_the_same(postgres_url: str) -> None:
    engine = create_async_engine(_async_url(postgres_url, "postgresql+asyncpg"))
    runtime = ConsolidationRuntime(AppSettings(consolidation_threshold=10), engine=engine)
    try:
        project = await runtime.projects.ensure("asyncpg-host")
        for number in range(10):
            async with AsyncSession(engine) as session, session.begin():
                await runtime.memories.add(session, project.id, lesson(number))
        check = await runtime.memories.after_write(project.id)
        assert check.triggered_job_id is not None
    finally:
        await asyncio.to_thread(runtime.close)
        await engine.dispose()


class _AsyncEngineOf:
    """Stands in for an AsyncEngine of a driver this machine does not have."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)


def test_an_unsupported_async_driver_is_named() -> None:
    from omoi_os.services.database import AsyncDriverUnsupported, sync_twin_of

    with pytest.raises(AsyncDriverUnsupported) as refused:
        sync_twin_of(_AsyncEngineOf("mysql+aiomysql://h/db"))
    assert str(refused.value) == (
        "async driver 'mysql+aiomysql' is not supported (use one of postgresql+asyncpg, "
        "postgresql+psycopg_async, sqlite+aiosqlite)"
    )
