"""ConsolidationRunner.run on both databases, with no worker and no queue: committed
batches that carry the job's running totals, the last batch left for the job's end,
resuming, dry runs, the deadline, the stop check, a batch that fails or whose job
stopped running, and the scope."""

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
from omoi_os.services.consolidation.job_queue import ClaimedJob
from omoi_os.services.consolidation.runner import (
    ConsolidationRunner,
    JobVanished,
    Progress,
    RunEnd,
    RunResult,
)
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.database import DatabaseService
from omoi_os.store import jobs as job_store
from omoi_os.store.tasks import ClaimedTask
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


class _Lease:
    """Stands in for the worker's lease on the job's task (runner.Lease): records
    "batch" for each hold (inside a batch's transaction, before its writes) and "beat"
    for each beat in `events`, and runs `on_hold` where the worker renews the lease
    (raising there rolls the batch back)."""

    def __init__(
        self,
        on_hold: Callable[[Session], None] | None = None,
        *,
        events: list[str] | None = None,
        beat_interval: float = math.inf,
    ) -> None:
        self.beat_interval = beat_interval
        self.events: list[str] = [] if events is None else events
        self._on_hold = on_hold

    def hold(self, session: Session) -> None:
        self.events.append("batch")
        if self._on_hold is not None:
            self._on_hold(session)

    def beat(self) -> None:
        self.events.append("beat")

    @property
    def holds(self) -> int:
        return self.events.count("batch")


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


StartJob = Callable[..., ClaimedJob]


@pytest.fixture
def start(
    db: DatabaseService, factories: Factories, clock: FakeClock, project_id: uuid.UUID
) -> StartJob:
    """Start a job of the test's project with this scope: a pending job marked running
    the way a worker does it (store.jobs.start_job)."""

    def start_job(**scope: Any) -> ClaimedJob:
        pending = factories.job(project_id, scope=ConsolidationScope(**scope).to_document())
        with db.transaction() as session:
            started = job_store.start_job(session, pending.id, now=clock())
        assert started is not None
        return _claimed(started.id, project_id, started.scope, started.result)

    return start_job


def _claimed(
    job_id: int, project_id: uuid.UUID, scope: dict[str, Any], result: dict[str, Any] | None
) -> ClaimedJob:
    """The job as a worker's claim hands it to the runner; the runner never looks at
    the task, so it is a dummy."""
    task = ClaimedTask(
        id=0,
        task_type=job_store.CONSOLIDATION_TASK,
        task_id=str(job_id),
        attempts=1,
        max_attempts=3,
        lease_expires_at=T0,
        claim_token="test",
    )
    return ClaimedJob(
        task=task,
        id=job_id,
        project_id=project_id,
        scope=ConsolidationScope.model_validate(scope),
        previous_result=result,
    )


def _end_completed(db: DatabaseService, job: ClaimedJob, result: RunResult) -> None:
    """Stand in for the worker's end of a completed run (JobQueue.end): the run's last
    batch written with the job's totals and its completion, in one transaction; if the
    job is no longer running, JobVanished, and nothing of it is written."""
    assert result.end is RunEnd.COMPLETED
    with db.transaction() as session:
        if result.last_batch is not None:
            db.backend.write_memories(session, result.last_batch)
        finished = job_store.finish_job(
            session,
            job.id,
            status=JobStatus.COMPLETED,
            now=T0,
            result=result.progress.to_document(),
        )
        if not finished:
            raise JobVanished(f"job {job.id} is no longer running")


def _marked_by(db: DatabaseService, job_id: int) -> int:
    with db.read() as session:
        statement = select(func.count()).where(TaskMemory.consolidation_job_id == job_id)
        return session.scalar(statement) or 0


def _unmarked_ids(db: DatabaseService, job_id: int) -> list[int]:
    """The memories `job_id` has not marked (committed), oldest first."""
    return [m.id for m in stored_memories(db) if m.consolidation_job_id != job_id]


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


def _never() -> bool:
    return False


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

    def stopping() -> bool:
        events.append("check")
        return False

    def on_hold(session: Session) -> None:
        # What other connections see: the batches before this one, not this one.
        seen_committed.append((_marked_by(db, job.id), stored_job(db, job.id).result))
        timer.advance(2.0)
        clock.advance(timedelta(hours=1))  # the run keeps the instant it started at

    result = runner.run(
        job, deadline=math.inf, stopping=stopping, lease=_Lease(on_hold, events=events)
    )

    assert result.end is RunEnd.COMPLETED
    # The lease is held first in every batch's transaction the runner writes. A batch of
    # fewer memories than the batch size is the last: no further batch is read to learn
    # that nothing is left. That last batch (2 memories) is the job's end's to write,
    # under the end's own fence: it holds no lease here, so one "batch" fewer than
    # batches. No beat: the score read was short, and each batch renews the lease itself.
    assert events == ["check", "batch", "check", "batch", "check"]  # 5, 5 and 2 memories
    assert seen_committed == [(0, None), (5, _document(5, duration=2.0))]
    # The runner wrote the first two batches and their totals, and nothing of the last.
    assert stored_job(db, job.id).result == _document(10, duration=4.0)
    assert stored_job(db, job.id).status is JobStatus.RUNNING  # ending it is the worker's part
    assert _marked_by(db, job.id) == 10
    # The totals include the last batch; its write is handed back.
    assert result.progress.to_document() == _document(12, duration=4.0)
    assert result.last_batch is not None and result.last_batch.job_id == job.id
    assert result.last_batch.marks.ids == _unmarked_ids(db, job.id)

    _end_completed(db, job, result)

    saved = stored_job(db, job.id)
    assert (saved.status, saved.result) == (JobStatus.COMPLETED, _document(12, duration=4.0))
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
    lease = _Lease()

    result = runner.run(job, deadline=math.inf, stopping=_never, lease=lease)

    # Its one batch, empty, is the last: left for the job's end, so the runner opens no
    # batch transaction and holds no lease (it used to hold it once, for nothing).
    assert (result.end, result.progress.to_document(), result.last_batch, lease.events) == (
        RunEnd.COMPLETED,
        _document(0),
        None,
        [],
    )
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
    checks = iter([False, True])

    result = runner.run(
        job,
        deadline=math.inf,
        stopping=lambda: next(checks),
        lease=_Lease(lambda _: timer.advance(3.0)),
    )
    assert (result.end, result.progress.to_document()) == (
        RunEnd.STOPPED,
        _document(5, duration=3.0),
    )
    assert result.last_batch is None  # a stopped run wrote all it did
    assert stored_job(db, job.id).result == _document(5, duration=3.0)

    # The next run of the job starts from what the job row holds.
    timer.advance(50.0)  # time between the runs is not the job's
    saved = stored_job(db, job.id)
    resumed = _claimed(job.id, project_id, saved.scope, saved.result)
    marked_in_batch: list[int] = []

    def on_hold(session: Session) -> None:
        statement = select(func.count()).where(TaskMemory.consolidation_job_id == job.id)
        marked_in_batch.append(session.scalar(statement) or 0)
        timer.advance(1.0)

    result = runner.run(resumed, deadline=math.inf, stopping=_never, lease=_Lease(on_hold))

    assert result.end is RunEnd.COMPLETED
    # The lease is held first in each batch the runner writes: 5 marked before the one
    # batch of 5 it wrote. The batch of 2 is the last, handed back unwritten (no hold):
    # it holds the 2 memories still unmarked, none counted twice.
    assert marked_in_batch == [5]
    assert result.last_batch is not None
    assert result.last_batch.marks.ids == _unmarked_ids(db, job.id)
    assert len(result.last_batch.marks) == 2
    assert result.progress.to_document() == _document(12, duration=4.0)
    assert stored_job(db, job.id).result == _document(10, duration=4.0)

    _end_completed(db, job, result)

    assert stored_job(db, job.id).result == _document(12, duration=4.0)
    assert _marked_by(db, job.id) == 12


def test_a_completed_runs_last_batch_is_returned_unwritten_with_the_totals(
    db: DatabaseService,
    factories: Factories,
    timer: FakeTimer,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 7)
    job = start()
    lease = _Lease(lambda _: timer.advance(1.0))

    result = runner.run(job, deadline=math.inf, stopping=_never, lease=lease)

    assert result.end is RunEnd.COMPLETED
    # The lease was held for the first batch only: the last one is fenced by the job's
    # end, which writes it.
    assert lease.events == ["batch"]
    # The first batch's 5 memories and totals are committed; the last batch's 2 are
    # handed back, with totals that count them.
    assert _marked_by(db, job.id) == 5
    saved = stored_job(db, job.id)
    assert (saved.status, saved.result) == (JobStatus.RUNNING, _document(5, duration=1.0))
    assert result.last_batch is not None and result.last_batch.job_id == job.id
    assert result.last_batch.marks.ids == _unmarked_ids(db, job.id)
    assert len(result.last_batch.marks) == 2
    assert result.progress.to_document() == _document(7, duration=1.0)

    _end_completed(db, job, result)

    assert _marked_by(db, job.id) == 7
    saved = stored_job(db, job.id)
    assert (saved.status, saved.result) == (JobStatus.COMPLETED, _document(7, duration=1.0))


def test_writing_the_last_batch_with_the_jobs_end_is_one_transaction(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 3)
    job = start()

    result = runner.run(job, deadline=math.inf, stopping=_never, lease=_Lease())

    # One batch, the last: the runner committed nothing of it.
    assert result.end is RunEnd.COMPLETED
    assert result.last_batch is not None and len(result.last_batch.marks) == 3
    assert (_marked_by(db, job.id), stored_job(db, job.id).result) == (0, None)

    # The sweeper ends the job before the worker does: the end finds it no longer
    # running, and the memories it wrote first go back with it.
    with db.transaction() as session:
        session.execute(
            update(ConsolidationJob)
            .where(ConsolidationJob.id == job.id)
            .values(status=JobStatus.TIMED_OUT, error="swept")
        )
    with pytest.raises(JobVanished):
        _end_completed(db, job, result)

    assert _marked_by(db, job.id) == 0
    saved = stored_job(db, job.id)
    assert (saved.status, saved.result) == (JobStatus.TIMED_OUT, None)


def test_a_resumed_dry_run_starts_its_totals_over(
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 4)
    job = start(dry_run=True)
    earlier = _document(3, consolidated=0, duration=9.0, dry_run=True)
    resumed = _claimed(job.id, project_id, {"dry_run": True}, earlier)

    result = runner.run(resumed, deadline=math.inf, stopping=_never, lease=_Lease())

    assert (result.end, result.progress.to_document(), result.last_batch) == (
        RunEnd.COMPLETED,
        _document(4, consolidated=0, dry_run=True),
        None,  # a dry run writes no memory, its last batch neither
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

    result = ConsolidationRunner(db, batch_size=3, clock=clock, timer=timer).run(
        job, deadline=math.inf, stopping=_never, lease=_Lease()
    )

    report = _document(8, consolidated=0, hot=7, cold=1, dry_run=True)
    assert (result.end, result.progress.to_document()) == (RunEnd.COMPLETED, report)
    assert result.last_batch is None  # nothing to write with the end
    # Saved after every batch but the last, dry or not (3 and 3 memories); the last
    # batch's totals (2, the old warning among them) are the job's end's to store.
    assert stored_job(db, job.id).result == _document(6, consolidated=0, dry_run=True)
    _end_completed(db, job, result)
    assert stored_job(db, job.id).result == report
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

    def stopping() -> bool:
        checks.append(timer())
        return False

    def on_hold(_: Session) -> None:
        timer.advance(5.0)  # the second batch reaches the deadline exactly

    result = runner.run(job, deadline=deadline, stopping=stopping, lease=_Lease(on_hold))

    assert result.end is RunEnd.TIMED_OUT
    assert checks == [100.0, 105.0]  # never asked once the deadline passed
    assert result.progress.to_document() == _document(10, duration=10.0)
    assert result.last_batch is None  # a run cut short wrote all it did
    # The lease is held first in its batch: the time that took is in that batch's totals.
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
    lease = _Lease()

    result = runner.run(job, deadline=timer(), stopping=_never, lease=lease)

    assert (result.end, result.progress.to_document(), result.last_batch, lease.events) == (
        RunEnd.TIMED_OUT,
        _document(0),
        None,
        [],
    )
    assert _marked_by(db, job.id) == 0


def test_stopping_ends_the_run_stopped_after_the_batch_in_progress(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    job = start()
    stop = threading.Event()

    def on_hold(_: Session) -> None:
        stop.set()  # the stop arrives while the first batch runs: that batch finishes

    result = runner.run(job, deadline=math.inf, stopping=stop.is_set, lease=_Lease(on_hold))

    assert (result.end, result.progress.to_document(), result.last_batch) == (
        RunEnd.STOPPED,
        _document(5),
        None,
    )
    assert stored_job(db, job.id).result == _document(5)
    assert _marked_by(db, job.id) == 5


def test_stopping_at_once_does_no_batch(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 3)
    job = start()
    lease = _Lease()

    result = runner.run(job, deadline=math.inf, stopping=lambda: True, lease=lease)

    assert (result.end, result.progress.to_document(), result.last_batch) == (
        RunEnd.STOPPED,
        _document(0),
        None,
    )
    assert lease.events == []
    assert (stored_job(db, job.id).result, _marked_by(db, job.id)) == (None, 0)


# --- a batch that cannot commit ------------------------------------------------------------


class _LeaseLost(Exception):
    pass


def test_the_lease_hold_raising_rolls_that_batch_back(
    db: DatabaseService,
    factories: Factories,
    project_id: uuid.UUID,
    start: StartJob,
    runner: ConsolidationRunner,
) -> None:
    factories.memories(project_id, 12)
    job = start()
    lease: _Lease

    def on_hold(session: Session) -> None:
        if lease.holds == 2:
            # The hold comes first: this batch has written nothing yet, the first one
            # is committed.
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

    lease = _Lease(on_hold)
    with pytest.raises(_LeaseLost):
        runner.run(job, deadline=math.inf, stopping=_never, lease=lease)

    assert lease.holds == 2
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

    def stopping() -> bool:
        nonlocal checks
        checks += 1
        if checks == 2:  # between batches, the sweeper times the job out
            with db.transaction() as session:
                session.execute(
                    update(ConsolidationJob)
                    .where(ConsolidationJob.id == job.id)
                    .values(status=JobStatus.TIMED_OUT, error="swept")
                )
        return False

    with pytest.raises(JobVanished, match=f"job {job.id} is no longer running"):
        runner.run(job, deadline=math.inf, stopping=stopping, lease=_Lease())

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
    # 7 memories, more than a batch: the runner writes the first batch itself, and its
    # save finds the job not running. (A run of one batch writes nothing to find it:
    # the job's end does, see test_writing_the_last_batch_with_the_jobs_end_is_one_...)
    factories.memories(project_id, 7)
    pending = factories.job(project_id)  # never started
    job = _claimed(pending.id, project_id, {}, None)

    with pytest.raises(JobVanished):
        runner.run(job, deadline=math.inf, stopping=_never, lease=_Lease())

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

    result = ConsolidationRunner(db, batch_size=2, clock=clock, timer=timer).run(
        job, deadline=math.inf, stopping=_never, lease=_Lease()
    )
    _end_completed(db, job, result)  # the last batch is written with the job's end

    assert result.end is RunEnd.COMPLETED
    marked = [m.execution_summary for m in stored_memories(db) if m.consolidation_job_id == job.id]
    assert marked == expected
    progress = result.progress
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
