"""TaskQueueService on both databases: idempotent enqueue inside the caller's
transaction, atomic claims, leases fenced by their claim token, retries with
backoff, dead tasks, and NOTIFY at commit on PostgreSQL.

Every queue method works in the session the caller passes. `_Queue` below gives
each call its own committed transaction, which is how a worker uses the queue; the
tests about transactions pass their session explicitly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import literal, select, text

from omoi_os import migrations, testing
from omoi_os.models import Project, QueuedTask, TaskState
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import (
    NOTIFY_CHANNEL,
    ClaimedTask,
    FailOutcome,
    RetryPolicy,
    TaskQueueService,
)
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.logs import one, records

TASK = "consolidation"


class _Queue:
    """The queue with each call in its own committed transaction."""

    def __init__(self, db: DatabaseService, service: TaskQueueService) -> None:
        self.db = db
        self.service = service

    def enqueue(self, *task_ids: str, task_type: str = TASK, at: datetime | None = None) -> int:
        with self.db.transaction() as session:
            return self.service.enqueue(
                session=session, task_type=task_type, tasks=[(i, at) for i in task_ids]
            )

    def claim(
        self, worker_id: str, *, task_types: Sequence[str] = (TASK,), limit: int = 1
    ) -> list[ClaimedTask]:
        with self.db.transaction() as session:
            return self.service.claim(
                session=session, task_types=task_types, worker_id=worker_id, limit=limit
            )

    def complete(self, task: ClaimedTask, worker_id: str) -> bool:
        with self.db.transaction() as session:
            return self.service.complete(session=session, task=task, worker_id=worker_id)

    def fail(self, task: ClaimedTask, worker_id: str, error: str) -> FailOutcome:
        with self.db.transaction() as session:
            return self.service.fail(session=session, task=task, worker_id=worker_id, error=error)

    def release(self, task: ClaimedTask, worker_id: str) -> bool:
        with self.db.transaction() as session:
            return self.service.release(session=session, task=task, worker_id=worker_id)

    def extend_lease(self, task: ClaimedTask, worker_id: str) -> bool:
        with self.db.transaction() as session:
            return self.service.extend_lease(session=session, task=task, worker_id=worker_id)

    def reclaim_expired(self) -> int:
        with self.db.transaction() as session:
            return self.service.reclaim_expired(session=session)


def _service(clock: FakeClock, **overrides: Any) -> TaskQueueService:
    values: dict[str, Any] = {
        "clock": clock,
        "lease": timedelta(seconds=30),
        "max_attempts": 3,
        "retry": RetryPolicy(base_delay=timedelta(seconds=10)),
    }
    return TaskQueueService(**(values | overrides))


@pytest.fixture
def queue(db: DatabaseService, clock: FakeClock) -> _Queue:
    return _Queue(db, _service(clock))


def _row_states(factories: Factories) -> list[tuple[str, str, TaskState, int]]:
    return [(r.task_type, r.task_id, r.state, r.attempts) for r in factories.queue_rows()]


# --- enqueue -----------------------------------------------------------------------------


def test_enqueue_is_idempotent_on_type_and_id(queue: _Queue, factories: Factories) -> None:
    assert queue.enqueue("1") == 1
    assert queue.enqueue("1") == 0
    assert queue.enqueue("1", task_type="other") == 1

    rows = factories.queue_rows()
    assert [(r.task_type, r.task_id, r.payload, r.state) for r in rows] == [
        (TASK, "1", {}, TaskState.QUEUED),
        ("other", "1", {}, TaskState.QUEUED),
    ]
    # Once done, the task's id is still taken: a job is queued once, ever.
    (task,) = queue.claim("worker-1")
    assert queue.complete(task, "worker-1") is True
    assert queue.enqueue("1") == 0
    assert [r.state for r in factories.queue_rows()] == [TaskState.DONE, TaskState.QUEUED]


def test_enqueue_queues_many_tasks_each_once(
    db: DatabaseService, queue: _Queue, factories: Factories, clock: FakeClock
) -> None:
    later = T0 + timedelta(minutes=3)
    with db.transaction() as session:
        tasks = [("p0", None), ("p1", later), ("p2", None), ("p3", None), ("p4", later)]
        assert queue.service.enqueue(session=session, task_type="names", tasks=tasks) == 5
    with db.transaction() as session:
        again = [("p0", None), ("p4", None), ("p5", later), ("p5", None)]
        assert queue.service.enqueue(session=session, task_type="names", tasks=again) == 1
    with db.transaction() as session:
        assert queue.service.enqueue(session=session, task_type="names", tasks=[]) == 0

    rows = factories.queue_rows()
    assert [
        (r.task_type, r.task_id, r.state, r.attempts, r.max_attempts, r.available_at) for r in rows
    ] == [
        ("names", "p0", TaskState.QUEUED, 0, 3, T0),
        ("names", "p1", TaskState.QUEUED, 0, 3, later),
        ("names", "p2", TaskState.QUEUED, 0, 3, T0),
        ("names", "p3", TaskState.QUEUED, 0, 3, T0),
        ("names", "p4", TaskState.QUEUED, 0, 3, later),  # the second enqueue changed nothing
        ("names", "p5", TaskState.QUEUED, 0, 3, later),  # the first of the duplicates won
    ]
    assert {r.created_at for r in rows} == {clock()}
    assert {(r.claimed_by, r.claim_token, r.lease_expires_at, r.finished_at) for r in rows} == {
        (None, None, None, None)
    }


def test_enqueue_select_queues_each_selected_id_once_claimable_now(
    db: DatabaseService, queue: _Queue, factories: Factories, clock: FakeClock
) -> None:
    names = factories.projects(3)
    ids = select(Project.name).where(Project.id.in_(names))
    queue.enqueue("p1")  # already queued: left alone

    with db.transaction() as session:
        queued = queue.service.enqueue_select(session=session, task_type=TASK, task_ids=ids)
        again = queue.service.enqueue_select(session=session, task_type=TASK, task_ids=ids)

    assert (queued, again) == (2, 0)
    rows = sorted(factories.queue_rows(), key=lambda r: r.task_id)
    assert [
        (r.task_type, r.task_id, r.payload, r.state, r.attempts, r.max_attempts) for r in rows
    ] == [(TASK, f"p{n}", {}, TaskState.QUEUED, 0, 3) for n in range(3)]
    assert {(r.available_at, r.created_at) for r in rows} == {(clock(), clock())}


def test_enqueue_joins_the_callers_transaction(
    db: DatabaseService, queue: _Queue, factories: Factories
) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.add(Project(name="caller's row", created_at=T0))
        queue.service.enqueue(session=session, task_type=TASK, tasks=[("7", None)])
        raise RuntimeError("the caller fails after enqueueing")

    assert factories.count(Project) == 0
    assert factories.count(QueuedTask) == 0

    with db.transaction() as session:
        session.add(Project(name="caller's row", created_at=T0))
        assert queue.service.enqueue(session=session, task_type=TASK, tasks=[("7", None)]) == 1

    assert factories.count(Project) == 1
    assert _row_states(factories) == [(TASK, "7", TaskState.QUEUED, 0)]


# --- claim -------------------------------------------------------------------------------


def test_claim_leases_due_tasks_oldest_first(
    queue: _Queue, clock: FakeClock, factories: Factories
) -> None:
    queue.enqueue("later", at=T0 + timedelta(minutes=5))
    queue.enqueue("a")
    queue.enqueue("b")
    queue.enqueue("c", task_type="other")

    claimed = queue.claim("worker-1", limit=10)

    assert [task.task_id for task in claimed] == ["a", "b"]
    assert [(t.task_type, t.attempts, t.max_attempts) for t in claimed] == [(TASK, 1, 3)] * 2
    assert [t.lease_expires_at for t in claimed] == [T0 + timedelta(seconds=30)] * 2
    assert all(t.claim_token for t in claimed)
    assert queue.claim("worker-2", limit=10) == []
    rows = {r.task_id: r for r in factories.queue_rows()}
    assert [(rows[i].state, rows[i].claimed_by) for i in ("a", "b", "later", "c")] == [
        (TaskState.CLAIMED, "worker-1"),
        (TaskState.CLAIMED, "worker-1"),
        (TaskState.QUEUED, None),
        (TaskState.QUEUED, None),
    ]

    clock.advance(timedelta(minutes=5))
    assert [task.task_id for task in queue.claim("worker-2")] == ["later"]
    assert [task.task_id for task in queue.claim("worker-2", task_types=["other"])] == ["c"]


def test_claim_takes_no_more_than_its_limit_and_the_lease_it_asks_for(
    db: DatabaseService, queue: _Queue
) -> None:
    queue.enqueue("a", "b", "c")

    with db.transaction() as session:
        claimed = queue.service.claim(
            session=session,
            task_types=[TASK],
            worker_id="worker-1",
            limit=2,
            lease=timedelta(minutes=7),
        )

    assert [(t.task_id, t.lease_expires_at) for t in claimed] == [
        ("a", T0 + timedelta(minutes=7)),
        ("b", T0 + timedelta(minutes=7)),
    ]
    assert [t.task_id for t in queue.claim("worker-1", limit=2)] == ["c"]


def test_a_claim_rolled_back_with_its_transaction_leaves_the_task_queued(
    db: DatabaseService, queue: _Queue, factories: Factories
) -> None:
    queue.enqueue("1")

    with pytest.raises(RuntimeError), db.transaction() as session:
        (task,) = queue.service.claim(session=session, task_types=[TASK], worker_id="worker-1")
        raise RuntimeError("starting the job failed")

    assert _row_states(factories) == [(TASK, "1", TaskState.QUEUED, 0)]
    (again,) = queue.claim("worker-2")
    assert (again.id, again.attempts) == (task.id, 1)


def test_next_available_at_is_the_earliest_queued_task_of_the_types(queue: _Queue) -> None:
    def next_at(*task_types: str) -> datetime | None:
        with queue.db.read() as session:
            return queue.service.next_available_at(session=session, task_types=task_types)

    assert next_at(TASK) is None
    queue.enqueue("b", at=T0 + timedelta(minutes=9))
    queue.enqueue("a", at=T0 + timedelta(minutes=4))
    queue.enqueue("x", task_type="other", at=T0 + timedelta(minutes=1))

    assert next_at(TASK) == T0 + timedelta(minutes=4)
    assert next_at(TASK, "other") == T0 + timedelta(minutes=1)
    queue.enqueue("now")
    (task,) = queue.claim("worker-1")  # a claimed task is not waiting any more
    assert task.task_id == "now"
    assert next_at(TASK) == T0 + timedelta(minutes=4)


# --- leases and fencing --------------------------------------------------------------------


def test_complete_is_fenced_by_the_lease(
    queue: _Queue, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    queue.enqueue("1")
    (task,) = queue.claim("worker-1")

    assert queue.complete(task, "worker-2") is False
    assert queue.complete(task, "worker-1") is True
    assert queue.complete(task, "worker-1") is False

    (row,) = factories.queue_rows()
    assert (row.state, row.finished_at, row.lease_expires_at) == (TaskState.DONE, T0, None)
    refused = records(caplog, "task_not_held")
    assert [(r.task_id, r.worker) for r in refused] == [("1", "worker-2"), ("1", "worker-1")]


def test_expired_lease_is_reclaimed_and_the_old_holder_is_fenced_out(
    queue: _Queue, clock: FakeClock, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    queue.enqueue("1")
    (first,) = queue.claim("worker-dead")

    clock.advance(timedelta(seconds=29))
    assert queue.reclaim_expired() == 0
    assert records(caplog, "tasks_reclaimed") == []
    clock.advance(timedelta(seconds=2))
    assert queue.reclaim_expired() == 1
    assert one(caplog, "tasks_reclaimed").count == 1
    (row,) = factories.queue_rows()
    assert (row.state, row.claimed_by, row.claim_token, row.lease_expires_at) == (
        TaskState.QUEUED,
        None,
        None,
        None,
    )
    assert (row.available_at, row.last_error) == (clock(), "lease of worker-dead expired")

    (second,) = queue.claim("worker-2")
    assert (second.id, second.attempts) == (first.id, 2)
    assert queue.complete(first, "worker-dead") is False
    assert queue.extend_lease(first, "worker-dead") is False
    assert queue.release(first, "worker-dead") is False
    assert queue.fail(first, "worker-dead", "too late") is FailOutcome.NOT_HELD
    assert queue.complete(second, "worker-2") is True
    (row,) = factories.queue_rows()
    assert (row.state, row.attempts, row.last_error) == (
        TaskState.DONE,
        2,
        "lease of worker-dead expired",
    )
    assert [r.worker for r in records(caplog, "task_not_held")] == ["worker-dead"] * 4


def test_extend_lease_keeps_the_task(queue: _Queue, clock: FakeClock, factories: Factories) -> None:
    queue.enqueue("1")
    (task,) = queue.claim("worker-1")

    clock.advance(timedelta(seconds=25))
    assert queue.extend_lease(task, "worker-1") is True
    assert factories.queue_rows()[0].lease_expires_at == T0 + timedelta(seconds=55)
    assert queue.extend_lease(task, "worker-2") is False
    clock.advance(timedelta(seconds=25))

    assert queue.reclaim_expired() == 0
    assert queue.complete(task, "worker-1") is True


def test_release_gives_the_task_back_and_fences_the_old_claim(
    queue: _Queue, clock: FakeClock, factories: Factories
) -> None:
    queue.enqueue("1")
    (first,) = queue.claim("worker-1")
    clock.advance(timedelta(seconds=5))

    assert queue.release(first, "worker-2") is False  # not its task
    assert queue.release(first, "worker-1") is True
    (row,) = factories.queue_rows()
    assert (row.state, row.attempts, row.available_at, row.claimed_by, row.claim_token) == (
        TaskState.QUEUED,
        0,
        clock(),
        None,
        None,
    )
    (again,) = queue.claim("worker-1")  # same worker, same attempt number

    assert (again.attempts, first.attempts) == (1, 1)  # a release costs no attempt
    assert again.claim_token != first.claim_token
    assert queue.complete(first, "worker-1") is False  # the stale handle is fenced out
    assert queue.complete(again, "worker-1") is True


def test_abandon_kills_unfinished_tasks_and_fences_their_holder(
    db: DatabaseService, queue: _Queue, clock: FakeClock, factories: Factories
) -> None:
    queue.enqueue("held", "finished", "waiting", "untouched")
    (held, finished) = queue.claim("worker-1", limit=2)
    assert queue.complete(finished, "worker-1") is True
    clock.advance(timedelta(seconds=3))

    with db.transaction() as session:
        abandoned = queue.service.abandon(
            session=session,
            task_type=TASK,
            task_ids=["held", "finished", "waiting", "missing"],
            reason="job cancelled",
        )
        assert queue.service.abandon(session=session, task_type=TASK, task_ids=[], reason="x") == 0

    assert abandoned == 2
    rows = {r.task_id: r for r in factories.queue_rows()}
    assert [
        (rows[i].state, rows[i].finished_at, rows[i].last_error, rows[i].claimed_by)
        for i in ("held", "finished", "waiting", "untouched")
    ] == [
        (TaskState.DEAD, clock(), "job cancelled", None),
        (TaskState.DONE, T0, None, "worker-1"),  # done: history
        (TaskState.DEAD, clock(), "job cancelled", None),
        (TaskState.QUEUED, None, None, None),
    ]
    assert queue.complete(held, "worker-1") is False  # the holder is fenced out


def test_dead_task_selects_the_last_error_of_a_dead_task_only(
    db: DatabaseService, queue: _Queue
) -> None:
    queue.enqueue("dead", "done", "queued")
    (task,) = queue.claim("worker-1")  # "dead": abandoned while held
    assert task.task_id == "dead"
    (done,) = queue.claim("worker-1")
    assert done.task_id == "done"
    assert queue.complete(done, "worker-1") is True
    with db.transaction() as session:
        queue.service.abandon(session=session, task_type=TASK, task_ids=["dead"], reason="gone")

    def rows_for(task_id: str, task_type: str = TASK) -> list[tuple[str | None, ...]]:
        with db.read() as session:
            statement = TaskQueueService.dead_task(task_type, literal(task_id))
            return [tuple(row) for row in session.execute(statement)]

    assert [rows_for(i) for i in ("dead", "queued", "done", "missing")] == [[("gone",)], [], [], []]
    assert rows_for("dead", task_type="other") == []


# --- failures and retries ------------------------------------------------------------------


def test_fail_retries_with_backoff_then_dies(
    queue: _Queue, clock: FakeClock, factories: Factories
) -> None:
    queue.enqueue("1")

    outcomes, delays = [], []
    for _ in range(3):
        (task,) = queue.claim("worker-1")
        outcomes.append(queue.fail(task, "worker-1", f"attempt {task.attempts} failed"))
        (row,) = factories.queue_rows()
        delays.append(row.available_at - clock())
        clock.set(row.available_at)

    assert outcomes == [FailOutcome.RETRY, FailOutcome.RETRY, FailOutcome.DEAD]
    assert delays[:2] == [timedelta(seconds=10), timedelta(seconds=20)]
    (row,) = factories.queue_rows()
    assert (row.state, row.attempts, row.last_error, row.finished_at) == (
        TaskState.DEAD,
        3,
        "attempt 3 failed",
        clock(),
    )
    assert (row.claimed_by, row.claim_token, row.lease_expires_at) == (None, None, None)
    assert queue.claim("worker-1") == []


def test_a_retried_task_waits_out_its_backoff(queue: _Queue, clock: FakeClock) -> None:
    queue.enqueue("1")
    (task,) = queue.claim("worker-1")
    assert queue.fail(task, "worker-1", "boom") is FailOutcome.RETRY

    clock.advance(timedelta(seconds=9))
    assert queue.claim("worker-1") == []
    clock.advance(timedelta(seconds=1))
    (again,) = queue.claim("worker-1")
    assert (again.id, again.attempts) == (task.id, 2)


def test_a_lease_that_expires_on_the_last_attempt_goes_dead(
    db: DatabaseService, clock: FakeClock, factories: Factories
) -> None:
    queue = _Queue(db, _service(clock, max_attempts=1))
    queue.enqueue("1")
    queue.claim("worker-dead")

    clock.advance(timedelta(minutes=1))
    assert queue.reclaim_expired() == 1

    (row,) = factories.queue_rows()
    assert (row.state, row.finished_at, row.last_error) == (
        TaskState.DEAD,
        clock(),
        "lease of worker-dead expired",
    )
    assert queue.claim("worker-2") == []


def test_retry_policy_doubles_and_caps() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=5), max_delay=timedelta(seconds=60))

    assert [policy.delay(n).total_seconds() for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert policy.delay(10_000) == timedelta(seconds=60)
    assert policy.delay(0) == timedelta(seconds=5)


def test_depth_counts_unfinished_tasks_by_type_and_state(queue: _Queue) -> None:
    queue.enqueue("a", "b", "c")
    queue.enqueue("x", task_type="other")
    (task,) = queue.claim("w")
    queue.complete(task, "w")
    queue.claim("w")

    with queue.db.read() as session:
        depth = TaskQueueService.depth(session=session)
    assert depth == {
        (TASK, TaskState.QUEUED): 1,
        (TASK, TaskState.CLAIMED): 1,
        ("other", TaskState.QUEUED): 1,
    }


def test_reclaim_stores_utc_whatever_zone_the_clock_speaks(
    db: DatabaseService, factories: Factories
) -> None:
    berlin_clock = FakeClock(T0.astimezone(ZoneInfo("Europe/Berlin")))
    queue = _Queue(db, _service(berlin_clock, max_attempts=1))
    queue.enqueue("1")
    queue.claim("worker-dead")
    berlin_clock.advance(timedelta(minutes=1))

    assert queue.reclaim_expired() == 1

    (row,) = factories.queue_rows()
    assert row.state is TaskState.DEAD
    assert row.finished_at == T0 + timedelta(minutes=1)
    assert row.finished_at.utcoffset() == timedelta(0)


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_claimers_never_share_a_task(db: DatabaseService, factories: Factories) -> None:
    """8 threads claim from 2,000 tasks: each task exactly once, none left over."""
    queue = _Queue(db, TaskQueueService())
    assert queue.enqueue(*(str(n) for n in range(2000))) == 2000
    start = threading.Barrier(8)

    def drain(worker: int) -> list[str]:
        start.wait(timeout=30)
        taken: list[str] = []
        while batch := queue.claim(f"worker-{worker}", limit=7):
            taken += [task.task_id for task in batch]
        return taken

    with ThreadPoolExecutor(8) as pool:
        per_worker = list(pool.map(drain, range(8)))

    everything = [task_id for taken in per_worker for task_id in taken]
    assert len(everything) == 2000
    assert set(everything) == {str(n) for n in range(2000)}
    assert factories.count(QueuedTask, QueuedTask.state == TaskState.CLAIMED) == 2000
    claimed_by = {r.task_id: r.claimed_by for r in factories.queue_rows()}
    assert claimed_by == {
        task_id: f"worker-{worker}" for worker, taken in enumerate(per_worker) for task_id in taken
    }


@pytest.mark.postgres_only
def test_a_claimer_skips_the_rows_another_claim_has_locked(
    postgres_url: str, clock: FakeClock
) -> None:
    """SKIP LOCKED: while one claim is uncommitted, another takes the next task at once
    instead of waiting; the first task comes back if that claim rolls back."""
    db = DatabaseService(postgres_url)
    queue = _Queue(db, _service(clock))
    try:
        queue.enqueue("a", "b")
        with db.transaction() as first:
            (held,) = queue.service.claim(session=first, task_types=[TASK], worker_id="w1")
            with db.transaction() as second:
                # Were the row waited for, this would fail after 5 s instead of hanging.
                second.execute(text("SET LOCAL lock_timeout = '5s'"))
                (other,) = queue.service.claim(session=second, task_types=[TASK], worker_id="w2")
                assert queue.service.claim(session=second, task_types=[TASK], worker_id="w2") == []
            assert (held.task_id, other.task_id) == ("a", "b")
            first.rollback()
        (again,) = queue.claim("w3")
        assert (again.task_id, again.attempts) == ("a", 1)
    finally:
        db.dispose()


@pytest.mark.postgres_only
def test_concurrent_claimers_share_the_work_on_postgres(postgres_url: str) -> None:
    """With SKIP LOCKED every claimer gets a share instead of queueing behind one."""
    db = DatabaseService(postgres_url)
    queue = _Queue(db, TaskQueueService())
    try:
        queue.enqueue(*(str(n) for n in range(400)))
        start = threading.Barrier(4)

        def drain(worker: int) -> int:
            start.wait(timeout=30)
            taken = 0
            while batch := queue.claim(f"worker-{worker}", limit=3):
                taken += len(batch)
            return taken

        with ThreadPoolExecutor(4) as pool:
            per_worker = list(pool.map(drain, range(4)))
    finally:
        db.dispose()

    assert sum(per_worker) == 400
    assert sum(1 for taken in per_worker if taken) >= 2


@pytest.mark.postgres_only
def test_enqueue_notifies_listeners_at_commit(postgres_url: str) -> None:
    db = DatabaseService(postgres_url)
    queue = _Queue(db, TaskQueueService())
    try:
        with psycopg.connect(testing.libpq_url(postgres_url), autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

            with db.transaction() as session:
                assert queue.service.enqueue(session=session, task_type=TASK, tasks=[("1", None)])
                assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
            received = list(listener.notifies(timeout=5, stop_after=1))

            with pytest.raises(RuntimeError), db.transaction() as session:
                queue.service.enqueue(session=session, task_type=TASK, tasks=[("2", None)])
                raise RuntimeError("rolled back: no task, no notification")
            assert queue.enqueue("1") == 0  # nothing queued: nobody is woken
            assert queue.enqueue("3", task_type="other") == 1
            after = list(listener.notifies(timeout=5, stop_after=1))
    finally:
        db.dispose()

    assert [(n.channel, n.payload) for n in received] == [(NOTIFY_CHANNEL, TASK)]
    assert [(n.channel, n.payload) for n in after] == [(NOTIFY_CHANNEL, "other")]


def test_sqlite_readers_do_not_hold_the_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    migrations.upgrade(url)
    db = DatabaseService(url)
    try:
        with db.read() as reader:
            reader.execute(select(Project.id)).all()  # a read transaction stays open
            started = time.monotonic()
            with db.transaction() as writer:  # would wait 30 s behind a write lock
                writer.add(Project(name="written", created_at=T0))
            assert time.monotonic() - started < 10
            assert reader.in_transaction()
    finally:
        db.dispose()
