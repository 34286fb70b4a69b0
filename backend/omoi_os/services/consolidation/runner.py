"""Consolidating one job's memories: score, tier and mark them, in committed batches.

A batch is one transaction: it writes its memories and the job's running totals
together, so a run cut short (crash, timeout, stop) resumes after the last committed
batch and counts nothing twice. Memories this job already marked are skipped on a
resume (`consolidation_job_id` is this job), whatever the scope.

A small project (up to _STREAM_ROWS memories) is read once, by the scan that ranks
its scores; that read also gives the memories in the job's scope, so its batches read
nothing more. A larger project's scan is streamed, and its batches are read as they go.

Tiers stay true as memories age: the scan that ranks the project's scores also finds
the consolidated memories whose tier is no longer what their age and standing give,
or whose tier expired (tier_expires_at, see scoring), and the run writes those after
its new memories, in batches too. It writes what changed, nothing else.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Row, Select, bindparam
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.models import MemoryTier
from omoi_os.services.consolidation.scoring import (
    TierCutoffs,
    age_in_days,
    tier_expiry,
    tier_for,
    value_score,
)
from omoi_os.services.database import DatabaseService

if TYPE_CHECKING:
    from omoi_os.services.consolidation.job_queue import ClaimedJob
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store
from omoi_os.store.sql import Bound

_STREAM_ROWS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TIER_CODES = list(MemoryTier)
_BEAT_EVERY_ROWS = 1_000  # how often a long scan looks at the timer


class Lease(Protocol):
    """The worker's hold on the job's task, which the runner keeps alive."""

    beat_interval: float  # seconds between beats while a long step outside a batch runs

    def hold(self, session: Session) -> None:
        """Renew the lease inside a batch's transaction, before its first write, and
        hold it to the commit; raises (rolling the batch back) if the task was lost."""

    def beat(self) -> None:
        """Renew the lease on its own (a long read outside any batch)."""


class RunEnd(StrEnum):
    COMPLETED = "completed"  # every memory in scope is done
    TIMED_OUT = "timed_out"  # the deadline passed between batches
    STOPPED = "stopped"  # the worker is stopping; the job will be picked up again
    CANCELLED = "cancelled"  # asked to stop (cancelled, project deactivated)


class JobVanished(Exception):
    """The job stopped being `running` under us (the sweeper ended it)."""


@dataclass
class Progress:
    """A job's running totals, stored as its `result` after every batch."""

    dry_run: bool
    memories_processed: int = 0
    memories_consolidated: int = 0
    tiers: dict[MemoryTier, int] = field(default_factory=lambda: dict.fromkeys(MemoryTier, 0))
    tiers_refreshed: int = 0  # consolidated memories whose tier or its expiry changed
    duration_seconds: float = 0.0

    @classmethod
    def resume(cls, result: dict[str, Any] | None, *, dry_run: bool) -> Progress:
        """Continue the totals a cut-short run left; a dry run always starts over."""
        if dry_run or not result:
            return cls(dry_run=dry_run)
        tiers = {tier: int(result.get("tiers", {}).get(tier, 0)) for tier in MemoryTier}
        return cls(
            dry_run=False,
            memories_processed=int(result.get("memories_processed", 0)),
            memories_consolidated=int(result.get("memories_consolidated", 0)),
            tiers=tiers,
            tiers_refreshed=int(result.get("tiers_refreshed", 0)),
            duration_seconds=float(result.get("duration_seconds", 0.0)),
        )

    def add(self, tiers: Sequence[MemoryTier]) -> None:
        self.memories_processed += len(tiers)
        if not self.dry_run:
            self.memories_consolidated += len(tiers)
        for tier in tiers:
            self.tiers[tier] += 1

    def to_document(self) -> dict[str, Any]:
        return {
            "memories_processed": self.memories_processed,
            "memories_consolidated": self.memories_consolidated,
            "tiers": {str(tier): count for tier, count in self.tiers.items()},
            "tiers_refreshed": self.tiers_refreshed,
            "duration_seconds": round(self.duration_seconds, 3),
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class RunResult:
    """What a run did: how it ended, its totals, and, when it completed, its last
    batch's write, left for the job's end to commit with it (None: nothing to write)."""

    end: RunEnd
    progress: Progress
    last_batch: memory_store.MemoryWrite | None = None


class ConsolidationRunner:
    """Runs one job's consolidation; knows nothing of queues or job life cycles."""

    def __init__(
        self,
        db: DatabaseService,
        *,
        batch_size: int = 1000,
        clock: Clock = utc_now,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._batch_size = batch_size
        self._clock = clock
        self._timer = timer  # seconds, for deadlines and durations

    def run(
        self, job: ClaimedJob, *, deadline: float, stopping: Callable[[], bool], lease: Lease
    ) -> RunResult:
        """Batches until the scope is done, `deadline` (on the timer) passes, or
        `stopping()` says so. Each batch renews the `lease` in its own transaction
        before its first write; a long read outside any batch (a large project's
        scores) beats it every `lease.beat_interval` seconds, and at its end if a beat
        is due, so that it never outlasts the lease. The last batch is not written
        here: it is returned, for the job's end to write in the same commit."""
        started = self._timer()
        now = self._clock()  # one instant for the whole run: ages and cutoffs agree
        progress = Progress.resume(job.previous_result, dry_run=job.scope.dry_run)
        if job.cancel_requested:  # asked to stop before this run began: nothing to do
            return RunResult(RunEnd.CANCELLED, progress)
        earlier = progress.duration_seconds
        cutoffs, standing, preread = self._scan(job, now, lease)
        refreshes = standing.refreshed(cutoffs, now).chunks(self._batch_size)
        batch = _Batch(job, progress, cutoffs, now, (earlier, started), lease)

        def cut_short() -> RunEnd | None:
            """Asked between batches: a cancel (learnt from the last batch's save), the
            deadline, the worker stopping."""
            if batch.cancel_requested:
                return RunEnd.CANCELLED
            if self._timer() >= deadline:
                return RunEnd.TIMED_OUT
            return RunEnd.STOPPED if stopping() else None

        ends_here = not refreshes  # the new memories' last batch is the run's last
        if preread is None:  # a large project: each batch is read as it goes
            end = self._read_batches(batch, cut_short, ends_here)
        else:  # a small one: its scan read every memory in scope already
            chunks = preread.marks(cutoffs, now).chunks(self._batch_size)
            end = self._write_batches(batch, chunks or [memory_store.Marks()], cut_short, ends_here)
        if end is None:
            end = self._refresh_batches(batch, refreshes, cut_short)
        progress.duration_seconds = earlier + self._timer() - started
        return RunResult(end, progress, batch.last_batch)

    def _read_batches(
        self, batch: _Batch, cut_short: Callable[[], RunEnd | None], ends_here: bool
    ) -> RunEnd | None:
        """A large project's memories in scope, read a batch at a time; None when all
        were done."""
        after_id: int | None = 0
        while after_id is not None:
            if end := cut_short():
                return end
            after_id = self._batch(batch, after_id, ends_here)
        return None

    def _write_batches(
        self,
        batch: _Batch,
        chunks: Sequence[memory_store.Marks],
        cut_short: Callable[[], RunEnd | None],
        ends_here: bool,
    ) -> RunEnd | None:
        """A small project's memories in scope, scored by its scan, written a batch at a
        time; None when all were done."""
        for position, marks in enumerate(chunks, start=1):
            if end := cut_short():
                return end
            write = memory_store.MemoryWrite(marks, job_id=batch.job.id, now=batch.now)
            if ends_here and position == len(chunks):
                self._leave_last(batch, write, marks.tiers)
            else:
                with self._db.transaction() as session:
                    self._write(session, batch, write, marks.tiers)
        return None

    def _refresh_batches(
        self,
        batch: _Batch,
        chunks: Sequence[memory_store.Marks],
        cut_short: Callable[[], RunEnd | None],
    ) -> RunEnd:
        """The consolidated memories whose tier changed, a batch at a time (a dry run
        only counts them); the last is left for the job's end."""
        for position, marks in enumerate(chunks, start=1):
            if end := cut_short():
                return end
            batch.progress.tiers_refreshed += len(marks)
            write = memory_store.MemoryWrite(marks)
            if position == len(chunks):
                self._leave_last(batch, write, ())
            else:
                with self._db.transaction() as session:
                    self._write(session, batch, write, ())
        return RunEnd.COMPLETED

    def _scan(
        self, job: ClaimedJob, now: datetime, lease: Lease
    ) -> tuple[TierCutoffs, _Standing, _Standing | None]:
        """The project's top-10% and top-30% scores, over all its memories, and its
        consolidated memories as re-tiering needs them; streamed, so that only those
        numbers stay in memory. A small project (read in one go) also gives its
        memories in the job's scope, scored: its batches need no read of their own
        (None for a large one, whose batches are read as they go)."""
        statement, parameters = memory_store.project_scoring_rows(job.project_id)
        scores = array("d")
        standing = _Standing()
        next_beat = self._timer() + lease.beat_interval
        # Most projects are small: one plain read, a statement of its own (a
        # server-side cursor costs three more round trips, a transaction two). Only a
        # project with more rows is read again, streamed, in a read transaction.
        with self._db.single_statement(read_only=True) as connection:
            at_most = {"read_at_once": _STREAM_ROWS + 1}
            rows: Any = connection.execute(_first_rows(statement), parameters | at_most).all()
        in_scope = _scope_test(job, now)
        preread: _Standing | None = _Standing()
        with ExitStack() as streaming:
            if len(rows) > _STREAM_ROWS:
                preread = None
                session = streaming.enter_context(self._db.read())
                streamed = {"yield_per": _STREAM_ROWS}
                rows = session.connection().execute(
                    statement, parameters, execution_options=streamed
                )
            for position, row in enumerate(rows):
                if position % _BEAT_EVERY_ROWS == 0 and self._timer() >= next_beat:
                    lease.beat()
                    next_beat = self._timer() + lease.beat_interval
                (memory_id, memory_type, reused_count, learned_at, success) = row[:5]
                is_consolidated, tier, tier_expires_at, consolidated_by = row[5:]
                score = value_score(
                    memory_type=memory_type,
                    reused_count=reused_count,
                    age_days=age_in_days(learned_at, now),
                    success=success,
                )
                scores.append(score)
                if preread is not None and in_scope(
                    memory_type, learned_at, is_consolidated, consolidated_by
                ):
                    preread.add(memory_id, score, learned_at, None, expired=False)
                elif is_consolidated:
                    expired = tier_expires_at is not None and tier_expires_at <= now
                    standing.add(memory_id, score, learned_at, tier, expired=expired)
        if self._timer() >= next_beat:  # a beat due at the end: give it now
            lease.beat()
        return TierCutoffs.from_scores(scores), standing, preread

    def _batch(self, batch: _Batch, after_id: int, ends_here: bool) -> int | None:
        """Read, score and tier the next batch and (unless dry) mark it, saving the
        totals, in one transaction. Returns the batch's last memory id, or None when it
        was the last (fewer memories than a batch: the next would be empty, so it is
        not read)."""
        job = batch.job
        with self._db.transaction() as session:
            rows = session.connection().execute(*self._next_batch(job, batch.now, after_id)).all()
            marks = _score_batch(rows, batch.cutoffs, batch.now)
            write = memory_store.MemoryWrite(marks, job_id=job.id, now=batch.now)
            last = len(rows) < self._batch_size
            if last and ends_here:
                self._leave_last(batch, write, marks.tiers)
            else:
                self._write(session, batch, write, marks.tiers)
        return None if last else int(rows[-1].id)

    def _write(
        self,
        session: Session,
        batch: _Batch,
        write: memory_store.MemoryWrite,
        new_tiers: Sequence[MemoryTier],
    ) -> None:
        """One batch's writes (none in a dry run) and the job's totals, under a renewed
        lease: its queue row, locked to the commit, is the first lock of the batch
        (invariant 7; the read before takes none), and no one can reclaim the task
        mid-batch."""
        batch.progress.add(new_tiers)
        batch.lease.hold(session)
        if not batch.job.scope.dry_run and write.marks:
            self._db.backend.write_memories(session, write)
        if write.marks:
            self._save(session, batch)

    def _leave_last(
        self, batch: _Batch, write: memory_store.MemoryWrite, new_tiers: Sequence[MemoryTier]
    ) -> None:
        """The run's last batch: counted, and left for the job's end to write."""
        batch.progress.add(new_tiers)
        self._stamp(batch)
        if not batch.job.scope.dry_run and write.marks:
            batch.last_batch = write

    def _stamp(self, batch: _Batch) -> None:
        earlier, started = batch.clock_base
        batch.progress.duration_seconds = earlier + self._timer() - started

    def _save(self, session: Session, batch: _Batch) -> None:
        self._stamp(batch)
        saved = job_store.save_progress(session, batch.job.id, batch.progress.to_document())
        if saved is job_store.Saved.NOT_RUNNING:
            raise JobVanished(f"job {batch.job.id} is no longer running")
        if saved is job_store.Saved.CANCEL_REQUESTED:
            batch.cancel_requested = True

    def _next_batch(self, job: ClaimedJob, now: datetime, after_id: int) -> Bound:
        scope = job.scope
        return memory_store.next_batch(
            project_id=job.project_id,
            job_id=job.id,
            after_id=after_id,
            size=self._batch_size,
            unconsolidated_only=scope.unconsolidated_only,
            memory_types=scope.memory_types,
            learned_before=memory_store.learned_before(now, scope.min_age_days),
        )


def _scope_test(job: ClaimedJob, now: datetime) -> Callable[[Any, datetime, bool, Any], bool]:
    """Whether a scanned memory is in the job's scope (memory_store.in_scope)."""
    scope = job.scope
    before = memory_store.learned_before(now, scope.min_age_days)

    def test(memory_type: Any, learned_at: datetime, is_consolidated: bool, job_id: Any) -> bool:
        return memory_store.in_scope(
            memory_type=memory_type,
            learned_at=learned_at,
            is_consolidated=is_consolidated,
            consolidation_job_id=job_id,
            job_id=job.id,
            unconsolidated_only=scope.unconsolidated_only,
            memory_types=scope.memory_types,
            learned_before=before,
        )

    return test


@cache
def _first_rows(statement: Select[Any]) -> Select[Any]:
    """A project's scoring read, stopped after `read_at_once` rows (one more than the
    most read in one go: one more row tells a large project from a small one)."""
    return statement.limit(bindparam("read_at_once"))


@dataclass
class _Batch:
    """What every batch of one run shares."""

    job: ClaimedJob
    progress: Progress
    cutoffs: TierCutoffs
    now: datetime
    clock_base: tuple[float, float]  # (seconds spent in earlier runs, timer at start)
    lease: Lease
    cancel_requested: bool = False  # a batch's save found the job asked to stop
    last_batch: memory_store.MemoryWrite | None = None  # left for the job's end


class _Standing:
    """Memories as the project's scan found and scored them, in compact arrays: its
    consolidated ones, enough to tell which need a new tier; or a small project's
    memories in a job's scope, to be tiered and marked."""

    def __init__(self) -> None:
        self._ids = array("q")
        self._scores = array("d")
        self._learned_us = array("q")  # learned_at, microseconds since the epoch
        self._tiers = array("b")  # index in _TIER_CODES, -1 for none
        self._expired = array("b")

    def add(
        self,
        memory_id: int,
        score: float,
        learned_at: datetime,
        tier: MemoryTier | None,
        *,
        expired: bool,
    ) -> None:
        self._ids.append(memory_id)
        self._scores.append(score)
        self._learned_us.append((learned_at - _EPOCH) // _MICROSECOND)
        self._tiers.append(-1 if tier is None else _TIER_CODES.index(tier))
        self._expired.append(expired)

    def refreshed(self, cutoffs: TierCutoffs, now: datetime) -> memory_store.Marks:
        """The memories whose tier differs from what age and standing give now, or
        whose tier expired: their new score, tier and expiry."""
        return self.marks(cutoffs, now, changed_only=True)

    def marks(
        self, cutoffs: TierCutoffs, now: datetime, *, changed_only: bool = False
    ) -> memory_store.Marks:
        """Every memory's (or, `changed_only`, as refreshed) score, tier and expiry."""
        marks = memory_store.Marks()
        for i, memory_id in enumerate(self._ids):
            learned_at = _EPOCH + self._learned_us[i] * _MICROSECOND
            score = self._scores[i]
            tier = tier_for(age_in_days(learned_at, now), score, cutoffs)
            if not changed_only or self._expired[i] or _TIER_CODES.index(tier) != self._tiers[i]:
                marks.add(memory_id, score, tier, tier_expiry(learned_at, now))
        return marks


def _score_batch(
    rows: Sequence[Row[Any]], cutoffs: TierCutoffs, now: datetime
) -> memory_store.Marks:
    marks = memory_store.Marks()
    for row in rows:
        memory_id, memory_type, reused_count, learned_at, success = tuple(row)
        age = age_in_days(learned_at, now)
        score = value_score(
            memory_type=memory_type, reused_count=reused_count, age_days=age, success=success
        )
        marks.add(memory_id, score, tier_for(age, score, cutoffs), tier_expiry(learned_at, now))
    return marks
