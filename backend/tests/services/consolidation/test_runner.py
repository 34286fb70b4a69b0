"""ConsolidationRunner.run on both databases, with no worker and no queue: committed
batches that carry the job's running totals, resuming, dry runs, the deadline, the
stop check, a batch that fails or whose job stopped running, and the scope."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from omoi_os.models import ConsolidationJob, JobStatus, MemoryTier, MemoryType, TaskMemory
from omoi_os.services.consolidation.runner import (
    ConsolidationRunner,
    Heartbeat,
    JobToRun,
    JobVanished,
    Progress,
    RunEnd,
)
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.database import DatabaseService
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store
from omoi_os.store.memories import MemoryWrite
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.rows import stored_job, stored_memories


class FakeTimer:
    """Seconds on a monotonic timer that moves only when the test says so."""

    def __init__(self, start: float = 100.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


@pytest.fixture
def project_id(factories: Factories) -> uuid.UUID:
    return factories.project().id


@pytest.fixture
def runner(db: DatabaseService, clock: FakeClock, timer: FakeTimer) -> ConsolidationRunner:
    """A runner of batches of 5 on the test database, the fake clock and the fake timer."""
    return ConsolidationRunner(db, batch_size=5, clock=clock, timer=timer)


StartJob = Callable[..., JobToRun]


@pytest.fixture
def start(
    db: DatabaseService, factories: Factories, clock: FakeClock, project_id: uuid.UUID
) -> StartJob:
    """Start a job of the test's project with this scope: a pending job marked running
    the way a worker does it (store.jobs.start_job)."""

    def start_job(**scope: Any) -> JobToRun:
        pending = factories.job(project_id, scope=ConsolidationScope(**scope).to_document())
        with db.transaction() as session:
            started = job_store.start_job(session, pending.id, now=clock())
        assert started is not None
        return _to_run(started.id, project_id, started.scope, started.result)

    return start_job


def _to_run(
    job_id: int, project_id: uuid.UUID, scope: dict[str, Any], result: dict[str, Any] | None
) -> JobToRun:
    return JobToRun(
        id=job_id,
        project_id=project_id,
        scope=ConsolidationScope.model_validate(scope),
        previous_result=result,
    )


def _marked_by(db: DatabaseService, job_id: int) -> int:
    with db.read() as session:
        statement = select(func.count()).where(TaskMemory.consolidation_job_id == job_id)
        return session.scalar(statement) or 0


def _document(
    processed: int,
    *,
    consolidated: int | None = None,
    hot: int | None = None,
    warm: int = 0,
    cold: int = 0,
    duration: float = 0.0,
    dry_run: bool = False,
) -> dict[str, Any]:
    return {
        "memories_processed": processed,
        "memories_consolidated": processed if consolidated is None else consolidated,
        "tiers": {"hot": processed if hot is None else hot, "warm": warm, "cold": cold},
        "tiers_refreshed": 0,
        "duration_seconds": duration,
        "dry_run": dry_run,
    }


def _always() -> bool:
    return True


def _nothing(_: Session) -> None:
    return None


# --- batches and totals ------------------------------------------------------------------


def test_batches_commit_one_by_one_with_the_jobs_running_totals(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    job = start()
    events: list[str] = []
    seen_committed: list[tuple[int, dict[str, Any] | None]] = []

    def keep_going() -> bool:
        events.append("check")
        return True

    def in_batch(session: Session) -> None:
        events.append("batch")
        # What other connections see: the batches before this one, not this one.
        seen_committed.append((_marked_by(db, job.id), stored_job(db, job.id).result))
        timer.advance(2.0)
        clock.advance(timedelta(hours=1))  # the run keeps the instant it started at

    end, progress = runner.run(
        job,
        deadline=math.inf,
        keep_going=keep_going,
        in_batch=in_batch,
        heartbeat=Heartbeat(lambda: events.append("beat"), interval=math.inf),
    )

    assert end is RunEnd.COMPLETED
    # in_batch runs first in every batch's transaction. A batch of fewer memories than
    # the batch size is the last: no further batch is read to learn that nothing is left.
    # No heartbeat: the score read was short, and each batch renews the lease itself.
    assert events == [*["check", "batch"] * 3]  # 5, 5 and 2 memories
    assert seen_committed == [
        (0, None),
        (5, _document(5, duration=2.0)),
        (10, _document(10, duration=4.0)),
    ]
    # The job holds the last batch's totals.
    assert stored_job(db, job.id).result == _document(12, duration=6.0)
    assert stored_job(db, job.id).status is JobStatus.RUNNING  # ending it is the worker's part
    assert progress.to_document() == _document(12, duration=6.0)
    stored = stored_memories(db)
    assert {
        (m.is_consolidated, m.consolidation_job_id, m.consolidated_at, m.tier) for m in stored
    } == {(True, job.id, T0, MemoryTier.HOT)}
    assert all(
        m.consolidation_score == pytest.approx(0.5722, abs=1e-4) for m in stored
    )  # learning, 1 day


def test_a_project_without_memories_completes_at_once(
    db: DatabaseService,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    job = start()
    batches: list[Session] = []

    end, progress = runner.run(job, deadline=math.inf, keep_going=_always, in_batch=batches.append)

    # One batch transaction (in_batch runs first in it), which finds nothing to do.
    assert (end, progress.to_document(), len(batches)) == (RunEnd.COMPLETED, _document(0), 1)
    assert stored_job(db, job.id).result is None


def test_a_resumed_run_skips_what_this_job_marked_and_continues_the_totals(
    db: DatabaseService,
    factories: Factories,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    # unconsolidated_only=False: what is skipped on the resume is skipped because this
    # job marked it, not because it is consolidated.
    job = start(unconsolidated_only=False)
    checks = iter([True, False])

    end, progress = runner.run(
        job,
        deadline=math.inf,
        keep_going=lambda: next(checks),
        in_batch=lambda _: timer.advance(3.0),
    )
    assert (end, progress.to_document()) == (RunEnd.STOPPED, _document(5, duration=3.0))
    assert stored_job(db, job.id).result == _document(5, duration=3.0)

    # The next run of the job starts from what the job row holds.
    timer.advance(50.0)  # time between the runs is not the job's
    saved = stored_job(db, job.id)
    resumed = _to_run(job.id, project_id, saved.scope, saved.result)
    marked_in_batch: list[int] = []

    def in_batch(session: Session) -> None:
        statement = select(func.count()).where(TaskMemory.consolidation_job_id == job.id)
        marked_in_batch.append(session.scalar(statement) or 0)
        timer.advance(1.0)

    end, progress = runner.run(resumed, deadline=math.inf, keep_going=_always, in_batch=in_batch)

    assert end is RunEnd.COMPLETED
    # in_batch runs before each batch is read: 5 before, then 5 more; the batch of 2
    # is the last: none counted twice.
    assert marked_in_batch == [5, 10]
    assert progress.to_document() == _document(12, duration=5.0)
    assert stored_job(db, job.id).result == _document(12, duration=5.0)
    assert _marked_by(db, job.id) == 12


def test_finish_runs_in_the_last_batchs_transaction_instead_of_saving_the_totals(
    db: DatabaseService,
    factories: Factories,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 7)
    job = start()
    finished: list[tuple[int, int, dict[str, Any]]] = []

    def finish(session: Session, progress: Progress, memories: MemoryWrite | None) -> None:
        # Inside the last batch: the first batch's 5 memories are marked; this one's 2
        # are handed over, for finish to write with the job's end.
        assert memories is not None and memories.job_id == job.id
        statement = select(func.count()).where(TaskMemory.consolidation_job_id == job.id)
        finished.append(
            (session.scalar(statement) or 0, len(memories.marks), progress.to_document())
        )
        memory_store.write(session, memories)
        job_store.finish_job(
            session, job.id, status=JobStatus.COMPLETED, now=T0, result=progress.to_document()
        )

    def in_batch(_: Session) -> None:
        timer.advance(1.0)

    end, _ = runner.run(
        job, deadline=math.inf, keep_going=_always, in_batch=in_batch, finish=finish
    )

    assert end is RunEnd.COMPLETED
    # in_batch ran for the first batch only: the last one is fenced by finish instead.
    assert finished == [(5, 2, _document(7, duration=1.0))]
    assert _marked_by(db, job.id) == 7
    saved = stored_job(db, job.id)
    assert (saved.status, saved.result) == (JobStatus.COMPLETED, _document(7, duration=1.0))


def test_finish_raising_rolls_the_last_batch_back(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 3)
    job = start()

    def finish(session: Session, _: Progress, memories: MemoryWrite | None) -> None:
        assert memories is not None
        memory_store.write(session, memories)
        raise JobVanished("the sweeper ended it")

    with pytest.raises(JobVanished):
        runner.run(job, deadline=math.inf, keep_going=_always, in_batch=_nothing, finish=finish)

    assert _marked_by(db, job.id) == 0
    assert stored_job(db, job.id).result is None


def test_a_resumed_dry_run_starts_its_totals_over(
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 4)
    job = start(dry_run=True)
    earlier = _document(3, consolidated=0, duration=9.0, dry_run=True)
    resumed = _to_run(job.id, project_id, {"dry_run": True}, earlier)

    end, progress = runner.run(resumed, deadline=math.inf, keep_going=_always, in_batch=_nothing)

    assert (end, progress.to_document()) == (
        RunEnd.COMPLETED,
        _document(4, consolidated=0, dry_run=True),
    )


def test_dry_run_reports_and_writes_no_memory(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
) -> None:
    factories.memories(project_id, 7)
    factories.memories(
        project_id, 1, memory_type=MemoryType.WARNING, learned_at=T0 - timedelta(days=400)
    )
    job = start(dry_run=True)
    before = [
        (m.is_consolidated, m.consolidation_score, m.tier, m.consolidation_job_id)
        for m in stored_memories(db)
    ]

    end, progress = ConsolidationRunner(db, batch_size=3, clock=clock, timer=timer).run(
        job, deadline=math.inf, keep_going=_always, in_batch=_nothing
    )

    report = _document(8, consolidated=0, hot=7, cold=1, dry_run=True)
    assert (end, progress.to_document()) == (RunEnd.COMPLETED, report)
    assert stored_job(db, job.id).result == report  # saved after every batch, dry or not
    after = [
        (m.is_consolidated, m.consolidation_score, m.tier, m.consolidation_job_id)
        for m in stored_memories(db)
    ]
    assert after == before == [(False, None, None, None)] * 8


# --- ending early --------------------------------------------------------------------------


def test_the_deadline_passing_between_batches_ends_the_run_timed_out(
    db: DatabaseService,
    factories: Factories,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    job = start()
    deadline = timer() + 10.0
    checks: list[float] = []

    def keep_going() -> bool:
        checks.append(timer())
        return True

    def in_batch(_: Session) -> None:
        timer.advance(5.0)  # the second batch reaches the deadline exactly

    end, progress = runner.run(job, deadline=deadline, keep_going=keep_going, in_batch=in_batch)

    assert end is RunEnd.TIMED_OUT
    assert checks == [100.0, 105.0]  # never asked once the deadline passed
    assert progress.to_document() == _document(10, duration=10.0)
    # in_batch runs first in its batch: the time it took is in that batch's totals.
    assert stored_job(db, job.id).result == _document(10, duration=10.0)
    assert _marked_by(db, job.id) == 10  # the committed batches stay


def test_a_deadline_already_passed_does_no_batch(
    db: DatabaseService,
    factories: Factories,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 3)
    job = start()
    batches: list[Session] = []

    end, progress = runner.run(job, deadline=timer(), keep_going=_always, in_batch=batches.append)

    assert (end, progress.to_document(), batches) == (RunEnd.TIMED_OUT, _document(0), [])
    assert _marked_by(db, job.id) == 0


def test_keep_going_false_ends_the_run_stopped_after_the_batch_in_progress(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    job = start()
    stop = threading.Event()

    def in_batch(_: Session) -> None:
        stop.set()  # the stop arrives while the first batch runs: that batch finishes

    end, progress = runner.run(
        job, deadline=math.inf, keep_going=lambda: not stop.is_set(), in_batch=in_batch
    )

    assert (end, progress.to_document()) == (RunEnd.STOPPED, _document(5))
    assert stored_job(db, job.id).result == _document(5)
    assert _marked_by(db, job.id) == 5


def test_keep_going_false_at_once_does_no_batch(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 3)
    job = start()

    end, progress = runner.run(job, deadline=math.inf, keep_going=lambda: False, in_batch=_nothing)

    assert (end, progress.to_document()) == (RunEnd.STOPPED, _document(0))
    assert (stored_job(db, job.id).result, _marked_by(db, job.id)) == (None, 0)


# --- a batch that cannot commit ------------------------------------------------------------


class _LeaseLost(Exception):
    pass


def test_in_batch_raising_rolls_that_batch_back(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    job = start()
    batches = 0

    def in_batch(session: Session) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            # in_batch runs first: this batch is not read yet, the first one is committed.
            statement = select(func.count()).where(TaskMemory.consolidation_job_id == job.id)
            assert session.scalar(statement) == 5
            # What it wrote in the batch's transaction (as the lease renewal writes the
            # queue row) goes with the batch when it raises.
            session.execute(
                update(TaskMemory)
                .where(TaskMemory.project_id == project_id)
                .values(is_consolidated=True)
            )
            raise _LeaseLost("another worker took the task")

    with pytest.raises(_LeaseLost):
        runner.run(job, deadline=math.inf, keep_going=_always, in_batch=in_batch)

    assert batches == 2
    assert _marked_by(db, job.id) == 5
    assert [m.is_consolidated for m in stored_memories(db)] == [True] * 5 + [False] * 7
    assert stored_job(db, job.id).result == _document(5)
    assert stored_job(db, job.id).status is JobStatus.RUNNING


def test_a_job_that_stopped_running_raises_job_vanished_and_its_batch_rolls_back(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    job = start()
    checks = 0

    def keep_going() -> bool:
        nonlocal checks
        checks += 1
        if checks == 2:  # between batches, the sweeper times the job out
            with db.transaction() as session:
                session.execute(
                    update(ConsolidationJob)
                    .where(ConsolidationJob.id == job.id)
                    .values(status=JobStatus.TIMED_OUT, error="swept")
                )
        return True

    with pytest.raises(JobVanished, match=f"job {job.id} is no longer running"):
        runner.run(job, deadline=math.inf, keep_going=keep_going, in_batch=_nothing)

    assert checks == 2
    assert _marked_by(db, job.id) == 5  # the second batch rolled back
    stored = stored_job(db, job.id)
    assert (stored.status, stored.error, stored.result) == (
        JobStatus.TIMED_OUT,
        "swept",
        _document(5),
    )


def test_a_job_that_is_not_running_writes_nothing(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 3)
    pending = factories.job(project_id)  # never started
    job = _to_run(pending.id, project_id, {}, None)

    with pytest.raises(JobVanished):
        runner.run(job, deadline=math.inf, keep_going=_always, in_batch=_nothing)

    assert _marked_by(db, job.id) == 0
    stored = stored_job(db, job.id)
    assert (stored.status, stored.result) == (JobStatus.PENDING, None)


# --- the scope -------------------------------------------------------------------------------


def _scope_memories(factories: Factories, project_id: uuid.UUID) -> None:
    """One memory per label, in this order (ids ascend)."""
    rows: list[tuple[str, MemoryType, timedelta, bool]] = [
        ("fix-old", MemoryType.ERROR_FIX, timedelta(days=10), False),
        ("fix-new", MemoryType.ERROR_FIX, timedelta(days=1), False),
        ("warning-old", MemoryType.WARNING, timedelta(days=10), False),
        ("decision-7d", MemoryType.DECISION, timedelta(days=7), False),
        ("learning-done", MemoryType.LEARNING, timedelta(days=30), True),
    ]
    for label, memory_type, age, consolidated in rows:
        factories.memories(
            project_id,
            1,
            execution_summary=label,
            memory_type=memory_type,
            learned_at=T0 - age,
            is_consolidated=consolidated,
        )


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({}, ["fix-old", "fix-new", "warning-old", "decision-7d"]),
        ({"memory_types": ["error_fix", "decision"]}, ["fix-old", "fix-new", "decision-7d"]),
        ({"min_age_days": 7}, ["fix-old", "warning-old", "decision-7d"]),  # 7 days is in
        ({"min_age_days": 8}, ["fix-old", "warning-old"]),
        (
            {"unconsolidated_only": False},
            ["fix-old", "fix-new", "warning-old", "decision-7d", "learning-done"],
        ),
        ({"memory_types": ["learning"]}, []),
        ({"memory_types": ["learning"], "unconsolidated_only": False}, ["learning-done"]),
        (
            {"memory_types": ["error_fix"], "min_age_days": 7, "unconsolidated_only": False},
            ["fix-old"],
        ),
    ],
    ids=[
        "default",
        "types",
        "min-age-boundary",
        "min-age",
        "rescore",
        "types-nothing-left",
        "types-rescore",
        "everything",
    ],
)
def test_the_scope_decides_which_memories_are_consolidated(
    db: DatabaseService,
    factories: Factories,
    clock: FakeClock,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
    scope: dict[str, Any],
    expected: list[str],
) -> None:
    _scope_memories(factories, project_id)
    other_project = factories.project(name="other").id
    factories.memories(other_project, 2, memory_type=MemoryType.ERROR_FIX)
    job = start(**scope)

    end, progress = ConsolidationRunner(db, batch_size=2, clock=clock, timer=timer).run(
        job, deadline=math.inf, keep_going=_always, in_batch=_nothing
    )

    assert end is RunEnd.COMPLETED
    marked = [m.execution_summary for m in stored_memories(db) if m.consolidation_job_id == job.id]
    assert marked == expected
    assert (progress.memories_processed, progress.memories_consolidated) == (
        len(expected),
        len(expected),
    )
    with db.read() as session:
        untouched = session.scalars(
            select(TaskMemory.is_consolidated).where(TaskMemory.project_id == other_project)
        ).all()
    assert untouched == [False, False]


# --- Progress ----------------------------------------------------------------------------------


def test_progress_resumes_from_a_stored_document_and_adds_to_it() -> None:
    stored = _document(4, hot=1, warm=2, cold=1, duration=1.5)

    progress = Progress.resume(stored, dry_run=False)
    progress.add([MemoryTier.COLD, MemoryTier.HOT])
    progress.duration_seconds = 2.0004

    assert progress.to_document() == _document(6, hot=2, warm=2, cold=2, duration=2.0)
    assert Progress.resume(None, dry_run=False).to_document() == _document(0)
    assert Progress.resume({}, dry_run=False).to_document() == _document(0)
