"""Consolidating one job's memories: score, tier and mark them, in committed batches.

A batch is one transaction: it writes its memories and the job's running totals
together, so a run cut short (crash, timeout, stop) resumes after the last committed
batch and counts nothing twice. Memories this job already marked are skipped on a
resume (`consolidation_job_id` is this job), whatever the scope.
"""

from __future__ import annotations

import time
import uuid
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.models import MemoryTier
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.consolidation.scoring import (
    TierCutoffs,
    age_in_days,
    tier_for,
    value_score,
)
from omoi_os.services.database import DatabaseService
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store

_STREAM_ROWS = 10_000
_BEAT_EVERY_ROWS = 1_000  # how often a long scan looks at the timer


@dataclass(frozen=True)
class Heartbeat:
    """A sign of life to give every `interval` seconds while a long step runs."""

    beat: Callable[[], None]
    interval: float

    def __call__(self) -> None:
        self.beat()


class RunEnd(StrEnum):
    COMPLETED = "completed"  # every memory in scope is done
    TIMED_OUT = "timed_out"  # the deadline passed between batches
    STOPPED = "stopped"  # the worker is stopping; the job will be picked up again


class JobVanished(Exception):
    """The job stopped being `running` under us (the sweeper ended it)."""


@dataclass
class Progress:
    """A job's running totals, stored as its `result` after every batch."""

    dry_run: bool
    memories_processed: int = 0
    memories_consolidated: int = 0
    tiers: dict[MemoryTier, int] = field(default_factory=lambda: dict.fromkeys(MemoryTier, 0))
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
            "duration_seconds": round(self.duration_seconds, 3),
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class JobToRun:
    id: int
    project_id: uuid.UUID
    scope: ConsolidationScope
    previous_result: dict[str, Any] | None


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
        self,
        job: JobToRun,
        *,
        deadline: float,
        keep_going: Callable[[], bool],
        in_batch: Callable[[Session], None],
        heartbeat: Heartbeat | None = None,
    ) -> tuple[RunEnd, Progress]:
        """Batches until the scope is done, `deadline` (on the timer) passes, or
        `keep_going()` says stop. `in_batch` runs first inside each batch's transaction
        (the worker renews its lease there, and holds it to the commit; raising rolls the
        batch back). `heartbeat` is called every `interval` seconds, on the timer, while
        a long step outside a batch runs (reading a large project's scores), and once
        after it, so that step never outlasts the worker's lease."""
        started = self._timer()
        now = self._clock()  # one instant for the whole run: ages and cutoffs agree
        progress = Progress.resume(job.previous_result, dry_run=job.scope.dry_run)
        earlier = progress.duration_seconds
        beat = heartbeat or Heartbeat(lambda: None, interval=float("inf"))
        cutoffs = self._cutoffs(job.project_id, now, beat)
        beat()
        after_id = 0
        end = RunEnd.COMPLETED
        while True:
            if self._timer() >= deadline:
                end = RunEnd.TIMED_OUT
                break
            if not keep_going():
                end = RunEnd.STOPPED
                break
            last_id = self._batch(
                job, progress, cutoffs, now, after_id, (earlier, started), in_batch
            )
            if last_id is None:
                break
            after_id = last_id
        progress.duration_seconds = earlier + self._timer() - started
        return end, progress

    def _cutoffs(self, project_id: uuid.UUID, now: datetime, beat: Heartbeat) -> TierCutoffs:
        """The project's top-10% and top-30% scores, over all its memories, streamed so
        that only the scores stay in memory."""
        statement = memory_store.project_scoring_rows(project_id)
        scores = array("d")
        next_beat = self._timer() + beat.interval
        with self._db.read() as session:
            rows = session.connection().execution_options(yield_per=_STREAM_ROWS).execute(statement)
            for position, (memory_type, reused_count, learned_at, success) in enumerate(rows):
                if position % _BEAT_EVERY_ROWS == 0 and self._timer() >= next_beat:
                    beat()
                    next_beat = self._timer() + beat.interval
                scores.append(
                    value_score(
                        memory_type=memory_type,
                        reused_count=reused_count,
                        age_days=age_in_days(learned_at, now),
                        success=success,
                    )
                )
        return TierCutoffs.from_scores(scores)

    def _batch(
        self,
        job: JobToRun,
        progress: Progress,
        cutoffs: TierCutoffs,
        now: datetime,
        after_id: int,
        clock_base: tuple[float, float],
        in_batch: Callable[[Session], None],
    ) -> int | None:
        """Score, tier and (unless dry) mark the next batch, and save the totals, in one
        transaction. Returns the batch's last memory id, or None when nothing is left."""
        with self._db.transaction() as session:
            # The lease first: its queue row, locked to the commit, is the first lock of
            # the batch (invariant 7), and no one can reclaim the task mid-batch.
            in_batch(session)
            rows = session.connection().execute(self._next_batch(job, now, after_id)).all()
            if not rows:
                return None
            marks = _score_batch(rows, cutoffs, now)
            if not job.scope.dry_run:
                memory_store.mark_consolidated(
                    session,
                    ids=marks.ids,
                    scores=marks.scores,
                    tiers=marks.tiers,
                    now=now,
                    job_id=job.id,
                )
            progress.add(marks.tiers)
            earlier, started = clock_base
            progress.duration_seconds = earlier + self._timer() - started
            if not job_store.save_progress(session, job.id, progress.to_document()):
                raise JobVanished(f"job {job.id} is no longer running")
        return int(rows[-1].id)

    def _next_batch(self, job: JobToRun, now: datetime, after_id: int) -> Any:
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


@dataclass
class _Marks:
    """One batch's results, column by column (as the database wants them)."""

    ids: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tiers: list[MemoryTier] = field(default_factory=list)


def _score_batch(rows: Sequence[Row[Any]], cutoffs: TierCutoffs, now: datetime) -> _Marks:
    marks = _Marks()
    for row in rows:
        memory_id, memory_type, reused_count, learned_at, success = tuple(row)
        age = age_in_days(learned_at, now)
        score = value_score(
            memory_type=memory_type, reused_count=reused_count, age_days=age, success=success
        )
        marks.ids.append(memory_id)
        marks.scores.append(score)
        marks.tiers.append(tier_for(age, score, cutoffs))
    return marks
