"""JobWriter.write (triggers/job_writer.py), the one write path of every trigger: the
job rows and their queue tasks are written in the caller's transaction, so they commit
together or not at all; the database's indexes decide which jobs may exist."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Select, func, select

from omoi_os.models import (
    ConsolidationJob,
    JobStatus,
    MemoryType,
    Project,
    QueuedTask,
    TaskState,
    TriggerType,
)
from omoi_os.services.consolidation.scope import DEFAULT_SCOPE, ConsolidationScope
from omoi_os.services.consolidation.triggers.job_writer import JobWriter
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store.jobs import CONSOLIDATION_TASK, NewJob, task_id_for_job
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.rows import stored_jobs


@pytest.fixture
def queue(clock: FakeClock) -> TaskQueueService:
    return TaskQueueService(clock=clock)


@pytest.fixture
def writer(queue: TaskQueueService, clock: FakeClock) -> JobWriter:
    return JobWriter(queue, clock=clock)


def _projects(ids: list[uuid.UUID]) -> Select[tuple[uuid.UUID]]:
    return select(Project.id).where(Project.id.in_(ids))


def _write_manual(db: DatabaseService, writer: JobWriter, ids: list[uuid.UUID]) -> list[NewJob]:
    """A manual job for each of `ids`, by "tests", written in a transaction of its own."""
    with db.transaction() as session:
        return writer.write(
            session,
            _projects(ids),
            trigger_type=TriggerType.MANUAL,
            scope=DEFAULT_SCOPE,
            triggered_by="tests",
        )


def _counts(db: DatabaseService) -> tuple[int, int]:
    """(jobs, queue tasks) as another connection sees them: only what committed."""
    with db.read() as session:
        jobs = session.scalar(select(func.count()).select_from(ConsolidationJob))
        tasks = session.scalar(select(func.count()).select_from(QueuedTask))
        return jobs or 0, tasks or 0


def test_write_commits_each_job_with_its_queue_task(
    db: DatabaseService, factories: Factories, writer: JobWriter, clock: FakeClock
) -> None:
    projects = factories.projects(3)
    scope = ConsolidationScope(memory_types=[MemoryType.DECISION], dry_run=True)

    with db.transaction() as session:
        created = writer.write(
            session,
            _projects(projects),
            trigger_type=TriggerType.MANUAL,
            scope=scope,
            triggered_by="alice",
        )
        assert _counts(db) == (0, 0)  # nothing is visible before the caller commits

    assert _counts(db) == (3, 3)
    assert sorted(job.project_id for job in created) == sorted(projects)
    jobs = stored_jobs(db)
    assert sorted((job.id, job.project_id) for job in jobs) == sorted(
        (job.id, job.project_id) for job in created
    )
    assert {
        (job.trigger_type, job.status, job.triggered_by, job.scheduled_for, job.created_at)
        for job in jobs
    } == {(TriggerType.MANUAL, JobStatus.PENDING, "alice", None, clock())}
    assert [job.scope for job in jobs] == [
        {"memory_types": ["decision"], "unconsolidated_only": True, "dry_run": True}
    ] * 3
    rows = factories.queue_rows()
    assert sorted(row.task_id for row in rows) == sorted(task_id_for_job(job.id) for job in jobs)
    assert {(row.task_type, row.state, row.attempts, row.available_at) for row in rows} == {
        (CONSOLIDATION_TASK, TaskState.QUEUED, 0, clock())
    }


def test_jobs_and_tasks_roll_back_together_when_the_callers_transaction_raises(
    db: DatabaseService, factories: Factories, writer: JobWriter
) -> None:
    projects = factories.projects(2)

    with pytest.raises(RuntimeError, match="the caller failed"), db.transaction() as session:
        created = writer.write(
            session,
            _projects(projects),
            trigger_type=TriggerType.THRESHOLD,
            scope=DEFAULT_SCOPE,
            triggered_by="threshold",
        )
        assert len(created) == 2
        raise RuntimeError("the caller failed")

    assert _counts(db) == (0, 0)


def test_a_project_with_an_active_job_gets_no_job_and_no_task(
    db: DatabaseService, factories: Factories, writer: JobWriter
) -> None:
    busy, free, done = factories.projects(3)
    pending = factories.job(busy, status=JobStatus.PENDING)
    finished = factories.job(done, status=JobStatus.COMPLETED, finished_at=T0)

    created = _write_manual(db, writer, [busy, free, done])

    assert sorted(job.project_id for job in created) == sorted([free, done])
    assert [(job.id, job.status) for job in stored_jobs(db) if job.project_id == busy] == [
        (pending.id, JobStatus.PENDING)
    ]
    (done_job,) = [job for job in created if job.project_id == done]
    assert [(job.id, job.status) for job in stored_jobs(db) if job.project_id == done] == [
        (finished.id, JobStatus.COMPLETED),
        (done_job.id, JobStatus.PENDING),
    ]
    assert sorted(row.task_id for row in factories.queue_rows()) == sorted(
        task_id_for_job(job.id) for job in created
    )

    # Now every project has an active job.
    again = _write_manual(db, writer, [busy, free, done])

    assert again == []
    assert _counts(db) == (4, 2)


def test_one_scheduled_job_per_project_per_tick(
    db: DatabaseService, factories: Factories, writer: JobWriter
) -> None:
    (project,) = factories.projects(1)
    tick = T0.replace(hour=2)

    def write(scheduled_for: datetime) -> list[NewJob]:
        with db.transaction() as session:
            return writer.write(
                session,
                _projects([project]),
                trigger_type=TriggerType.SCHEDULED,
                scope=DEFAULT_SCOPE,
                triggered_by="scheduler",
                scheduled_for=scheduled_for,
            )

    (first,) = write(tick)
    with db.transaction() as session:  # the job ends: the project is free again
        session.get_one(ConsolidationJob, first.id).status = JobStatus.COMPLETED

    assert write(tick) == []  # the same tick again: no second job
    (second,) = write(tick + timedelta(days=1))

    assert [(job.id, job.scheduled_for) for job in stored_jobs(db)] == [
        (first.id, tick),
        (second.id, tick + timedelta(days=1)),
    ]
    assert [row.task_id for row in factories.queue_rows()] == [
        task_id_for_job(first.id),
        task_id_for_job(second.id),
    ]


def test_each_task_id_is_task_id_for_job_of_its_job(
    db: DatabaseService, factories: Factories, writer: JobWriter
) -> None:
    projects = factories.projects(5)

    created = _write_manual(db, writer, projects)

    by_task = {row.task_id: row for row in factories.queue_rows()}
    assert sorted(by_task) == sorted(task_id_for_job(job.id) for job in created)
    assert sorted(by_task) == sorted(str(job.id) for job in stored_jobs(db))


def test_a_delay_is_when_the_tasks_become_claimable_and_the_jobs_say_so(
    db: DatabaseService,
    factories: Factories,
    writer: JobWriter,
    queue: TaskQueueService,
    clock: FakeClock,
) -> None:
    later, now = factories.projects(2)
    available_at = clock() + timedelta(seconds=90)

    with db.transaction() as session:
        (delayed,) = writer.write(
            session,
            _projects([later]),
            trigger_type=TriggerType.THRESHOLD,
            scope=DEFAULT_SCOPE,
            triggered_by="threshold",
            delay=timedelta(seconds=90),
        )
        (at_once,) = writer.write(
            session,
            _projects([now]),
            trigger_type=TriggerType.MANUAL,
            scope=DEFAULT_SCOPE,
            triggered_by="tests",
        )

    assert {row.task_id: row.available_at for row in factories.queue_rows()} == {
        task_id_for_job(delayed.id): available_at,
        task_id_for_job(at_once.id): clock(),
    }
    claimable = {job.id: (job.created_at, job.claimable_at) for job in stored_jobs(db)}
    assert claimable == {delayed.id: (clock(), available_at), at_once.id: (clock(), clock())}
    with db.transaction() as session:
        claimed = queue.claim(
            session=session, task_types=[CONSOLIDATION_TASK], worker_id="w", limit=10
        )
    assert [task.task_id for task in claimed] == [task_id_for_job(at_once.id)]
    clock.advance(timedelta(seconds=90))
    with db.transaction() as session:
        claimed = queue.claim(
            session=session, task_types=[CONSOLIDATION_TASK], worker_id="w", limit=10
        )
    assert [task.task_id for task in claimed] == [task_id_for_job(delayed.id)]


def test_a_job_whose_task_cannot_be_queued_is_not_written(
    db: DatabaseService, factories: Factories, writer: JobWriter, clock: FakeClock
) -> None:
    other, project = factories.projects(2)
    earlier = factories.job(other, status=JobStatus.COMPLETED, finished_at=T0)
    # A stale task already holds the id the next job will get: its task would not be
    # queued, and a job without a task would never run.
    with db.transaction() as session:
        session.add(
            QueuedTask(
                task_type=CONSOLIDATION_TASK,
                task_id=task_id_for_job(earlier.id + 1),
                state=TaskState.DONE,
                available_at=clock(),
                created_at=clock(),
            )
        )

    with pytest.raises(RuntimeError, match="1 jobs written but 0 tasks queued"):
        _write_manual(db, writer, [project])

    assert [job.id for job in stored_jobs(db)] == [earlier.id]
    assert [row.task_id for row in factories.queue_rows()] == [task_id_for_job(earlier.id + 1)]
