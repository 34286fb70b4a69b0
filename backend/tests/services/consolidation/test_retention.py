"""Retention (retention.py, store/retention.py): old done and dead tasks, old finished
jobs (but each project's latest) and old tick records (but the newest) are deleted in
bounded batches; everything else, and every memory, stays."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import (
    ConsolidationJob,
    ConsolidationTick,
    JobStatus,
    MemoryTier,
    QueuedTask,
    TaskState,
)
from omoi_os.services.consolidation.retention import Retention
from omoi_os.services.database import DatabaseService
from tests.support.clocks import FakeClock
from tests.support.consolidation import MakeTriggers, finish_job, trigger_count
from tests.support.factories import T0, Factories
from tests.support.logs import one
from tests.support.rows import stored_memories

DAY = timedelta(days=1)
OLD = T0 - 40 * DAY  # past the default retention of 30 days
YOUNG = T0 - 10 * DAY


class _Pauses(list[float]):
    """Stands in for time.sleep: records the pauses between batches, waits for none."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _retention(db: DatabaseService, clock: FakeClock, **options: Any) -> Retention:
    settings = AppSettings(database_url=db.url)
    options = {"sleep": _Pauses()} | options
    return Retention(db, settings=settings, clock=clock, metrics=ConsolidationMetrics(), **options)


def _tasks(db: DatabaseService, *rows: tuple[str, TaskState, datetime | None]) -> None:
    """Queue rows (task_id, state, finished_at), written directly."""
    values = [
        {
            "task_type": "consolidation",
            "task_id": task_id,
            "payload": {},
            "state": state,
            "available_at": OLD,
            "created_at": OLD,
            "finished_at": finished_at,
        }
        for task_id, state, finished_at in rows
    ]
    with db.transaction() as session:
        session.execute(insert(QueuedTask), values)


def _finished(factories: Factories, project_id: uuid.UUID, status: JobStatus, at: datetime) -> int:
    job = factories.job(project_id, status=status, created_at=at, started_at=at, finished_at=at)
    return job.id


def _ticks(db: DatabaseService, *instants: datetime) -> None:
    with db.transaction() as session:
        session.add_all(ConsolidationTick(scheduled_for=at, fired_at=at) for at in instants)


def _remaining(db: DatabaseService) -> tuple[list[str], list[int], list[datetime]]:
    """(task ids, job ids, tick instants) still stored."""
    with db.read() as session:
        return (
            list(session.scalars(select(QueuedTask.task_id).order_by(QueuedTask.id))),
            list(session.scalars(select(ConsolidationJob.id).order_by(ConsolidationJob.id))),
            list(
                session.scalars(
                    select(ConsolidationTick.scheduled_for).order_by(
                        ConsolidationTick.scheduled_for
                    )
                )
            ),
        )


def test_purge_deletes_old_history_in_batches_and_keeps_the_rest(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os.services.consolidation.retention")
    _tasks(
        db,
        ("old-done-1", TaskState.DONE, OLD),
        ("old-done-2", TaskState.DONE, OLD - DAY),
        ("old-done-3", TaskState.DONE, OLD - 2 * DAY),
        ("old-dead-1", TaskState.DEAD, OLD),
        ("old-dead-2", TaskState.DEAD, OLD - 3 * DAY),
        ("young-done", TaskState.DONE, YOUNG),
        ("queued", TaskState.QUEUED, None),
        ("claimed", TaskState.CLAIMED, None),
    )
    busy, idle, active, running, tied = factories.projects(5)
    busy_old = [
        _finished(factories, busy, JobStatus.COMPLETED, OLD - 10 * DAY),
        _finished(factories, busy, JobStatus.FAILED, OLD - 5 * DAY),
        _finished(factories, busy, JobStatus.CANCELLED, OLD),
    ]
    busy_young = _finished(factories, busy, JobStatus.COMPLETED, YOUNG)
    idle_older = _finished(factories, idle, JobStatus.TIMED_OUT, OLD - 20 * DAY)
    idle_latest = _finished(factories, idle, JobStatus.COMPLETED, OLD - 2 * DAY)
    active_latest = _finished(factories, active, JobStatus.COMPLETED, OLD)
    pending = factories.job(active, created_at=OLD).id
    running_job = factories.job(
        running, status=JobStatus.RUNNING, created_at=OLD, started_at=OLD
    ).id
    tied_first = _finished(factories, tied, JobStatus.COMPLETED, OLD)
    tied_second = _finished(factories, tied, JobStatus.COMPLETED, OLD)  # same instant, later id
    _ticks(db, OLD - 2 * DAY, OLD - DAY, OLD)
    # A memory consolidated by a job that retention deletes keeps all of it.
    factories.memories(
        busy,
        1,
        is_consolidated=True,
        consolidated_at=OLD,
        consolidation_job_id=busy_old[0],
        consolidation_score=0.75,
        tier=MemoryTier.WARM,
    )
    pauses = _Pauses()
    retention = _retention(db, clock, batch_size=2, sleep=pauses)

    assert retention.count_expired() == {
        "task_queue": 5,
        "consolidation_jobs": 5,
        "consolidation_ticks": 2,
    }
    summary = retention.purge()

    assert summary.deleted == {"task_queue": 5, "consolidation_jobs": 5, "consolidation_ticks": 2}
    # Batches of 2: 2+2+1 tasks, 2+2+1 jobs, 2+0 ticks; each its own transaction.
    assert summary.transactions == {
        "task_queue": 3,
        "consolidation_jobs": 3,
        "consolidation_ticks": 2,
    }
    assert (summary.before, summary.complete) == (T0 - 30 * DAY, True)
    # A pause after each full batch (2 of tasks, 2 of jobs, 1 of ticks), none after the
    # last batch of a table.
    assert len(pauses) == 5 and all(pause > 0 for pause in pauses)
    tasks, jobs, ticks = _remaining(db)
    assert tasks == ["young-done", "queued", "claimed"]
    assert jobs == [busy_young, idle_latest, active_latest, pending, running_job, tied_second]
    assert ticks == [OLD]
    assert idle_older not in jobs and tied_first not in jobs
    (memory,) = stored_memories(db)
    assert (
        memory.is_consolidated,
        memory.consolidated_at,
        memory.consolidation_job_id,
        memory.consolidation_score,
        memory.tier,
    ) == (True, OLD, busy_old[0], 0.75, MemoryTier.WARM)
    registry = retention._metrics.registry
    assert {
        table: registry.get_sample_value("omoi_retention_rows_deleted_total", {"table": table})
        for table in summary.deleted
    } == {"task_queue": 5.0, "consolidation_jobs": 5.0, "consolidation_ticks": 2.0}
    logged = one(caplog, "retention_purged")
    assert logged.deleted == summary.deleted
    assert (logged.transactions, logged.complete) == (8, True)
    assert logged.getMessage() == (
        "retention: deleted 5 queue tasks, 5 jobs and 2 tick records from before "
        "2025-12-06T12:00:00+00:00, in 8 transactions"
    )
    # Nothing more to do: a second purge deletes nothing.
    assert retention.purge().total == 0


def test_the_periodic_step_purges_once_an_hour_and_continues_a_long_purge(
    db: DatabaseService, clock: FakeClock
) -> None:
    _tasks(db, *((f"old-{n}", TaskState.DONE, OLD) for n in range(3)))
    retention = _retention(db, clock, batch_size=1, batches_per_run=2)

    first = retention.purge_if_due()  # the first pass purges at once, up to its budget
    rest = retention.purge_if_due()  # the budget ran out: the next pass continues
    _tasks(db, ("old-3", TaskState.DONE, OLD))
    clock.advance(timedelta(minutes=59))
    early = retention.purge_if_due()
    clock.advance(timedelta(minutes=1))
    hourly = retention.purge_if_due()

    assert first is not None and (first.deleted["task_queue"], first.complete) == (2, False)
    assert rest is not None and (rest.deleted["task_queue"], rest.complete) == (1, True)
    assert early is None
    assert hourly is not None and hourly.deleted["task_queue"] == 1
    assert _remaining(db)[0] == []


def test_the_cooldown_still_holds_after_a_purge(
    db: DatabaseService, factories: Factories, clock: FakeClock, make_triggers: MakeTriggers
) -> None:
    triggers = make_triggers(consolidation_threshold=10, consolidation_cooldown=300)
    project = factories.project().id
    old_jobs = [_finished(factories, project, JobStatus.COMPLETED, OLD - n * DAY) for n in (1, 2)]
    factories.memories(project, 10)
    last = triggers.trigger_consolidation_sync(project)
    clock.advance(timedelta(minutes=1))
    finish_job(db, last, clock(), consolidate=True)  # the cooldown runs from here
    factories.memories(project, 10)

    _retention(db, clock).purge()

    assert _remaining(db)[1] == [last]
    assert all(job not in _remaining(db)[1] for job in old_jobs)
    assert triggers.check_threshold_triggers_sync(project) is None
    assert trigger_count(triggers, "threshold", "skipped_cooldown") == 1
    clock.advance(timedelta(seconds=300))
    assert triggers.check_threshold_triggers_sync(project) is not None


@pytest.mark.postgres_only
def test_two_purges_at_once_share_the_rows_on_postgres(postgres_url: str, clock: FakeClock) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    try:
        _tasks(
            db, *((f"old-{n}", TaskState.DONE, OLD - n * timedelta(seconds=1)) for n in range(400))
        )
        projects = factories.projects(20)
        with db.transaction() as session:
            session.execute(
                insert(ConsolidationJob),
                [
                    {
                        "project_id": project,
                        "trigger_type": "manual",
                        "status": JobStatus.COMPLETED,
                        "triggered_by": "tests",
                        "scope": {},
                        "created_at": OLD,
                        "finished_at": OLD - n * timedelta(seconds=1),
                    }
                    for project in projects
                    for n in range(10)
                ],
            )
        start = threading.Barrier(2)

        def purge(_: int) -> dict[str, int]:
            start.wait(timeout=30)
            return _retention(db, clock, batch_size=10).purge().deleted

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(purge, range(2))
        tasks, jobs, _ = _remaining(db)
    finally:
        db.dispose()

    assert first["task_queue"] + second["task_queue"] == 400
    assert first["consolidation_jobs"] + second["consolidation_jobs"] == 20 * 9
    assert tasks == []
    assert len(jobs) == 20  # each project's latest


@pytest.mark.postgres_only
def test_a_purge_skips_the_rows_another_transaction_holds(
    postgres_url: str, clock: FakeClock
) -> None:
    """SKIP LOCKED: rows locked elsewhere (another replica's batch) are passed over at
    once, not waited for; the next purge takes them."""
    db = DatabaseService(postgres_url)
    try:
        _tasks(db, *((f"old-{n}", TaskState.DONE, OLD - n * DAY) for n in range(5)))
        retention = _retention(db, clock, batch_size=2)
        with ThreadPoolExecutor(1) as pool, db.transaction() as holder:
            held = "SELECT id FROM task_queue WHERE task_id IN ('old-4', 'old-1') FOR UPDATE"
            holder.execute(text(held))  # the oldest and a middle one
            first = pool.submit(retention.purge).result(timeout=10)  # hangs if it waited
        second = retention.purge()
        tasks = _remaining(db)[0]
    finally:
        db.dispose()

    assert (first.deleted["task_queue"], second.deleted["task_queue"]) == (3, 2)
    assert tasks == []
