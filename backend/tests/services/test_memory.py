"""MemoryService on both databases: a memory is stored with every field, the
threshold check that follows reports the job it started, and a failing check never
loses the memory."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from omoi_os.config import AppSettings
from omoi_os.errors import ProjectNotFound
from omoi_os.models import (
    ConsolidationJob,
    JobStatus,
    MemoryType,
    QueuedTask,
    TaskMemory,
    TriggerType,
)
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, NewMemory, ThresholdCheck
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.logs import one

THRESHOLD = 10


class _RecordingTriggers:
    """Stands in for the trigger service: records the threshold checks it is asked
    for, and answers `job_id` or raises `error`."""

    def __init__(self, *, job_id: int | None = None, error: Exception | None = None) -> None:
        self.checked: list[uuid.UUID | str] = []
        self._job_id = job_id
        self._error = error

    def check_threshold_triggers_sync(self, project_id: uuid.UUID | str) -> int | None:
        self.checked.append(project_id)
        if self._error is not None:
            raise self._error
        return self._job_id


@pytest.fixture
def triggers(db: DatabaseService, clock: FakeClock) -> ConsolidationTriggerService:
    settings = AppSettings(database_url=db.url, consolidation_threshold=THRESHOLD)
    return ConsolidationTriggerService(db, settings=settings, clock=clock)


@pytest.fixture
def memories(
    db: DatabaseService, triggers: ConsolidationTriggerService, clock: FakeClock
) -> MemoryService:
    return MemoryService(db, triggers, clock=clock)


def _stored(db: DatabaseService) -> list[dict[str, object]]:
    with db.read() as session:
        rows = session.execute(select(TaskMemory.__table__).order_by(TaskMemory.id)).all()
    return [dict(row._mapping) for row in rows]


def test_create_memory_stores_every_field(
    db: DatabaseService, factories: Factories, memories: MemoryService
) -> None:
    project = factories.project()
    learned_at = T0 - timedelta(days=3)

    stored = memories.create_memory_sync(
        project.id,
        NewMemory(
            memory_type=MemoryType.DECISION,
            execution_summary="use the outbox",
            success=False,
            reused_count=4,
            learned_at=learned_at,
        ),
    )

    expected = {
        "project_id": project.id,
        "memory_type": MemoryType.DECISION,
        "execution_summary": "use the outbox",
        "success": False,
        "reused_count": 4,
        "learned_at": learned_at,
        "metadata": None,
        "is_consolidated": False,
        "consolidated_at": None,
        "consolidation_job_id": None,
        "consolidation_score": None,
        "tier": None,
        "tier_expires_at": None,
    }
    assert _stored(db) == [{"id": stored.memory.id} | expected]
    assert dict(stored.memory._mapping) == {"id": stored.memory.id} | expected
    assert (stored.triggered_job_id, stored.threshold_check_failed) == (None, False)
    assert factories.count(ConsolidationJob) == 0


def test_create_memory_defaults(
    db: DatabaseService, factories: Factories, memories: MemoryService, clock: FakeClock
) -> None:
    project = factories.project()
    clock.set(T0 + timedelta(minutes=5))

    stored = memories.create_memory_sync(
        project.id, NewMemory(memory_type=MemoryType.WARNING, execution_summary="careful")
    )

    (row,) = _stored(db)
    assert (row["success"], row["reused_count"], row["learned_at"]) == (
        True,
        0,
        T0 + timedelta(minutes=5),
    )
    assert row["id"] == stored.memory.id


def test_create_memory_reports_the_job_its_write_started(
    db: DatabaseService, factories: Factories, memories: MemoryService
) -> None:
    project = factories.project()
    factories.memories(project.id, THRESHOLD - 1)
    note = NewMemory(memory_type=MemoryType.LEARNING, execution_summary="the tenth")

    crossing = memories.create_memory_sync(project.id, note)
    after = memories.create_memory_sync(project.id, note)

    with db.read() as session:
        jobs = session.scalars(select(ConsolidationJob)).all()
    assert [(job.id, job.trigger_type, job.status, job.triggered_by) for job in jobs] == [
        (crossing.triggered_job_id, TriggerType.THRESHOLD, JobStatus.PENDING, "threshold")
    ]
    assert crossing.threshold_check_failed is False
    assert (after.triggered_job_id, after.threshold_check_failed) == (None, False)
    assert [row.task_id for row in factories.queue_rows()] == [str(crossing.triggered_job_id)]
    assert factories.count(TaskMemory) == THRESHOLD + 1


def test_create_memory_reports_what_the_check_answered(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    fake = _RecordingTriggers(job_id=77)
    memories = MemoryService(db, fake)  # type: ignore[arg-type]

    stored = memories.create_memory_sync(
        project.id, NewMemory(memory_type=MemoryType.LEARNING, execution_summary="x")
    )

    assert (stored.triggered_job_id, stored.threshold_check_failed) == (77, False)
    assert fake.checked == [project.id]


def test_a_failing_threshold_check_keeps_the_memory(
    db: DatabaseService, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="omoi_os.services.memory")
    project = factories.project()
    fake = _RecordingTriggers(error=RuntimeError("the probe failed"))
    memories = MemoryService(db, fake)  # type: ignore[arg-type]

    stored = memories.create_memory_sync(
        project.id, NewMemory(memory_type=MemoryType.ERROR_FIX, execution_summary="kept")
    )

    assert (stored.triggered_job_id, stored.threshold_check_failed) == (None, True)
    assert [row["execution_summary"] for row in _stored(db)] == ["kept"]
    assert fake.checked == [project.id]
    logged = one(caplog, "threshold_check_failed")
    assert logged.project_id == str(project.id)  # type: ignore[attr-defined]
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "the probe failed"


def test_after_write_of_a_host_written_memory(
    db: DatabaseService, factories: Factories, memories: MemoryService
) -> None:
    """A host that writes memories with its own code runs the same check afterwards."""
    project = factories.project()
    factories.memories(project.id, THRESHOLD - 1)
    below = memories.after_write_sync(project.id)
    factories.memories(project.id, 1)

    crossed = memories.after_write_sync(str(project.id))

    with db.read() as session:
        job_ids = session.scalars(select(ConsolidationJob.id)).all()
    assert below == ThresholdCheck(None)
    assert crossed == ThresholdCheck(job_ids[0]) and len(job_ids) == 1


def test_after_write_of_an_unknown_project_says_so_without_a_traceback(
    db: DatabaseService, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os.services.memory")
    unknown = uuid.uuid4()
    fake = _RecordingTriggers(error=ProjectNotFound(unknown))
    memories = MemoryService(db, fake)  # type: ignore[arg-type]

    check = memories.after_write_sync(unknown)

    assert check == ThresholdCheck(None, failed=False, unknown_project=True)
    assert fake.checked == [unknown]
    record = one(caplog, "threshold_check_unknown_project")
    assert record.project_id == str(unknown)  # type: ignore[attr-defined]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert record.getMessage() == (
        f"threshold check after a memory write: project {unknown} does not exist"
    )


@pytest.mark.asyncio
async def test_after_write_async(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    fake = _RecordingTriggers(job_id=5)
    memories = MemoryService(db, fake)  # type: ignore[arg-type]

    check = await memories.after_write(project.id)

    assert check == ThresholdCheck(5)
    assert fake.checked == [project.id]


def test_create_memory_of_an_unknown_project_writes_nothing(
    db: DatabaseService, factories: Factories
) -> None:
    factories.project()
    unknown = uuid.uuid4()
    fake = _RecordingTriggers()
    memories = MemoryService(db, fake)  # type: ignore[arg-type]

    with pytest.raises(ProjectNotFound) as raised:
        memories.create_memory_sync(
            unknown, NewMemory(memory_type=MemoryType.LEARNING, execution_summary="lost")
        )

    assert raised.value.project_id == unknown
    assert factories.count(TaskMemory) == 0
    assert factories.count(ConsolidationJob) == 0
    assert factories.count(QueuedTask) == 0
    assert fake.checked == []
