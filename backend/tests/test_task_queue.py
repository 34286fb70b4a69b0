"""TaskQueueService on both databases: idempotent enqueue, atomic claims, leases,
retries with backoff, dead tasks, and NOTIFY on PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import select

from omoi_os import migrations
from omoi_os.models import Project, QueuedTask, TaskState
from omoi_os.services.database import DatabaseService, read_session
from omoi_os.services.task_queue import (
    NOTIFY_CHANNEL,
    FailOutcome,
    RetryPolicy,
    TaskQueueService,
)

from .clocks import FakeClock
from .factories import T0, Factories


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def queue(db: DatabaseService, clock: FakeClock) -> TaskQueueService:
    return TaskQueueService(
        db,
        clock=clock,
        lease=timedelta(seconds=30),
        max_attempts=3,
        retry=RetryPolicy(base_delay=timedelta(seconds=10)),
    )


def test_enqueue_is_idempotent_on_type_and_id(
    queue: TaskQueueService, factories: Factories
) -> None:
    assert queue.enqueue("consolidation", "1", {"job_id": 1}) is True
    assert queue.enqueue("consolidation", "1", {"job_id": "other"}) is False
    assert queue.enqueue("other", "1") is True

    rows = factories.queue_rows()
    assert [(r.task_type, r.task_id, r.payload, r.state) for r in rows] == [
        ("consolidation", "1", {"job_id": 1}, TaskState.QUEUED),
        ("other", "1", {}, TaskState.QUEUED),
    ]


def test_enqueue_joins_the_callers_transaction(
    db: DatabaseService, queue: TaskQueueService, factories: Factories
) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.add(Project(name="caller's row", created_at=T0))
        queue.enqueue("consolidation", "7", session=session)
        raise RuntimeError("the caller fails after enqueueing")

    assert factories.count(Project) == 0
    assert factories.count(QueuedTask) == 0

    with db.transaction() as session:
        session.add(Project(name="caller's row", created_at=T0))
        queue.enqueue("consolidation", "7", session=session)

    assert factories.count(Project) == 1
    assert factories.count(QueuedTask) == 1


def test_claim_leases_due_tasks_oldest_first(queue: TaskQueueService, clock: FakeClock) -> None:
    queue.enqueue("consolidation", "later", available_at=T0 + timedelta(minutes=5))
    queue.enqueue("consolidation", "a")
    queue.enqueue("consolidation", "b")
    queue.enqueue("other", "c")

    claimed = queue.claim(["consolidation"], "worker-1", limit=10)

    assert [task.task_id for task in claimed] == ["a", "b"]
    assert all(task.attempts == 1 for task in claimed)
    assert all(task.lease_expires_at == T0 + timedelta(seconds=30) for task in claimed)
    assert queue.claim(["consolidation"], "worker-2", limit=10) == []

    clock.advance(timedelta(minutes=5))
    assert [task.task_id for task in queue.claim(["consolidation"], "worker-2")] == ["later"]


def test_complete_is_fenced_by_the_lease(queue: TaskQueueService, factories: Factories) -> None:
    queue.enqueue("consolidation", "1")
    (task,) = queue.claim(["consolidation"], "worker-1")

    assert queue.complete(task, "worker-2") is False
    assert queue.complete(task, "worker-1") is True
    assert queue.complete(task, "worker-1") is False

    (row,) = factories.queue_rows()
    assert row.state == TaskState.DONE
    assert row.finished_at == T0


def test_expired_lease_is_reclaimed_and_the_old_holder_is_fenced_out(
    queue: TaskQueueService, clock: FakeClock, factories: Factories
) -> None:
    queue.enqueue("consolidation", "1")
    (first,) = queue.claim(["consolidation"], "worker-dead")

    clock.advance(timedelta(seconds=29))
    assert queue.reclaim_expired() == 0
    clock.advance(timedelta(seconds=2))
    assert queue.reclaim_expired() == 1

    (second,) = queue.claim(["consolidation"], "worker-2")
    assert (second.id, second.attempts) == (first.id, 2)
    assert queue.complete(first, "worker-dead") is False
    assert queue.extend_lease(first, "worker-dead") is False
    assert queue.complete(second, "worker-2") is True
    (row,) = factories.queue_rows()
    assert row.last_error == "lease of worker-dead expired"


def test_extend_lease_keeps_the_task(queue: TaskQueueService, clock: FakeClock) -> None:
    queue.enqueue("consolidation", "1")
    (task,) = queue.claim(["consolidation"], "worker-1")

    clock.advance(timedelta(seconds=25))
    assert queue.extend_lease(task, "worker-1") is True
    clock.advance(timedelta(seconds=25))

    assert queue.reclaim_expired() == 0
    assert queue.complete(task, "worker-1") is True


def test_fail_retries_with_backoff_then_dies(
    queue: TaskQueueService, clock: FakeClock, factories: Factories
) -> None:
    queue.enqueue("consolidation", "1")

    outcomes, delays = [], []
    for _ in range(3):
        (task,) = queue.claim(["consolidation"], "worker-1")
        outcomes.append(queue.fail(task, "worker-1", f"attempt {task.attempts} failed"))
        (row,) = factories.queue_rows()
        delays.append(row.available_at - clock())
        clock.set(row.available_at)

    assert outcomes == [FailOutcome.RETRY, FailOutcome.RETRY, FailOutcome.DEAD]
    assert delays[:2] == [timedelta(seconds=10), timedelta(seconds=20)]
    (row,) = factories.queue_rows()
    assert (row.state, row.attempts, row.last_error) == (TaskState.DEAD, 3, "attempt 3 failed")
    assert queue.claim(["consolidation"], "worker-1") == []


def test_a_lease_that_expires_on_the_last_attempt_goes_dead(
    queue: TaskQueueService, clock: FakeClock, factories: Factories
) -> None:
    queue.enqueue("consolidation", "1", max_attempts=1)
    queue.claim(["consolidation"], "worker-dead")

    clock.advance(timedelta(minutes=1))
    assert queue.reclaim_expired() == 1

    (row,) = factories.queue_rows()
    assert (row.state, row.finished_at) == (TaskState.DEAD, clock())


def test_retry_policy_doubles_and_caps() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=5), max_delay=timedelta(seconds=60))

    assert [policy.delay(n).total_seconds() for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert policy.delay(10_000) == timedelta(seconds=60)


def test_depth_counts_unfinished_tasks_by_type_and_state(queue: TaskQueueService) -> None:
    for task_id in "abc":
        queue.enqueue("consolidation", task_id)
    queue.enqueue("other", "x")
    (task,) = queue.claim(["consolidation"], "w")
    queue.complete(task, "w")
    queue.claim(["consolidation"], "w")

    assert queue.depth() == {
        ("consolidation", TaskState.QUEUED): 1,
        ("consolidation", TaskState.CLAIMED): 1,
        ("other", TaskState.QUEUED): 1,
    }


def test_concurrent_claimers_never_share_a_task(database_url: str, factories: Factories) -> None:
    """8 threads claim from 2,000 tasks: each task exactly once, none left over."""
    db = DatabaseService(database_url)
    queue = TaskQueueService(db)
    with db.transaction() as session:
        for n in range(2000):
            queue.enqueue("consolidation", str(n), session=session)
    start = threading.Barrier(8)

    def drain(worker: int) -> list[str]:
        start.wait()
        taken: list[str] = []
        while batch := queue.claim(["consolidation"], f"worker-{worker}", limit=7):
            taken += [task.task_id for task in batch]
        return taken

    with ThreadPoolExecutor(8) as pool:
        per_worker = list(pool.map(drain, range(8)))
    db.dispose()

    everything = [task_id for taken in per_worker for task_id in taken]
    assert len(everything) == 2000
    assert set(everything) == {str(n) for n in range(2000)}
    assert factories.count(QueuedTask, QueuedTask.state == TaskState.CLAIMED) == 2000
    if database_url.startswith("postgresql"):
        # With SKIP LOCKED every worker gets a share instead of queueing behind one.
        assert sum(1 for taken in per_worker if taken) >= 2


@pytest.mark.postgres_only
def test_enqueue_notifies_listeners_at_commit(postgres_url: str) -> None:
    db = DatabaseService(postgres_url)
    queue = TaskQueueService(db)
    listen_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(listen_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

        with db.transaction() as session:
            queue.enqueue("consolidation", "1", session=session)
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        received = list(listener.notifies(timeout=5, stop_after=1))

    db.dispose()
    assert [(n.channel, n.payload) for n in received] == [(NOTIFY_CHANNEL, "consolidation")]


def test_enqueue_select_queues_each_id_once(
    db: DatabaseService, queue: TaskQueueService, factories: Factories
) -> None:
    ids = factories.projects(5)
    select_ids = select(Project.name)
    with db.transaction() as session:
        assert queue.enqueue_select(session, "names", select_ids, {"k": "v"}) == 5
    with db.transaction() as session:
        assert queue.enqueue_select(session, "names", select_ids) == 0

    rows = factories.queue_rows()
    assert len(ids) == 5
    assert sorted(r.task_id for r in rows) == [f"p{n}" for n in range(5)]
    assert {(r.state, r.attempts, r.max_attempts) for r in rows} == {(TaskState.QUEUED, 0, 3)}
    assert all(r.payload == {"k": "v"} for r in rows)


def test_release_gives_the_task_back_and_fences_the_old_claim(
    queue: TaskQueueService, factories: Factories
) -> None:
    queue.enqueue("consolidation", "1")
    (first,) = queue.claim(["consolidation"], "worker-1")

    assert queue.release(first, "worker-1") is True
    (again,) = queue.claim(["consolidation"], "worker-1")  # same worker, same attempt number

    assert (again.attempts, first.attempts) == (1, 1)  # a release costs no attempt
    assert again.claim_token != first.claim_token
    assert queue.complete(first, "worker-1") is False  # the stale handle is fenced out
    assert queue.complete(again, "worker-1") is True


def test_reclaim_stores_utc_whatever_zone_the_clock_speaks(
    db: DatabaseService, factories: Factories
) -> None:
    berlin_clock = FakeClock(T0.astimezone(ZoneInfo("Europe/Berlin")))
    queue = TaskQueueService(db, clock=berlin_clock, lease=timedelta(seconds=30), max_attempts=1)
    queue.enqueue("consolidation", "1")
    queue.claim(["consolidation"], "worker-dead")
    berlin_clock.advance(timedelta(minutes=1))

    assert queue.reclaim_expired() == 1

    (row,) = factories.queue_rows()
    assert row.state is TaskState.DEAD
    assert row.finished_at == T0 + timedelta(minutes=1)


def test_sqlite_readers_do_not_hold_the_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    migrations.upgrade(url)
    db = DatabaseService(url)
    try:
        with read_session(db.session_factory) as reader:
            reader.execute(select(Project.id)).all()  # a read transaction stays open
            started = time.monotonic()
            with db.transaction() as writer:  # would wait 30 s behind a write lock
                writer.add(Project(name="written", created_at=T0))
            assert time.monotonic() - started < 1
    finally:
        db.dispose()
