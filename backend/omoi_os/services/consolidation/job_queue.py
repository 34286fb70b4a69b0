"""A consolidation job and its queue task, moved together: claimed and started as one
unit, and ended as one unit, in one transaction whatever the end.

The worker claims through `claim` and ends every job through `end`; nothing else
moves a claimed job. Each end writes the queue row first (the first lock; invariant
7, docs/invariants.md), then the job, then the project's cooldown, and only if this
worker still holds the task (the fence, invariant 6) and the job is still running:
a worker that stalled past its lease never overwrites another's work. What differs
between the databases (a claim and a completion fused into one statement on
PostgreSQL) is the engine's (omoi_os.engines).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from omoi_os.clock import Clock
from omoi_os.models import ACTIVE_JOB_STATUSES, JobStatus
from omoi_os.services.consolidation.decisions import starts_cooldown
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import ClaimedTask, FailOutcome, TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store
from omoi_os.store.memories import MemoryWrite
from omoi_os.store.sql import execute_counting


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker has claimed and started, with the queue task that fences it."""

    task: ClaimedTask
    id: int
    project_id: uuid.UUID
    scope: ConsolidationScope
    previous_result: dict[str, Any] | None  # the totals a cut-short run left
    cancel_requested: bool = False  # asked to stop before this run (a cancel, a deactivation)


@dataclass(frozen=True)
class EndedUnrun:
    """A claimed task whose job had ended meanwhile (cancelled, timed out): its task is
    done, and the job must not run."""

    task: ClaimedTask


class TaskEnd(StrEnum):
    """What becomes of the queue task when its job ends."""

    DONE = "done"
    HANDED_BACK = "handed_back"  # claimable again at once, the attempt not counted
    FAILED = "failed"  # an attempt spent: retried after the backoff, or dead


@dataclass(frozen=True)
class Ending:
    """One end of a claimed job: its new status and what it records, and its task's."""

    status: JobStatus
    task: TaskEnd
    result: dict[str, Any] | None = None  # None keeps the totals the batches saved
    error: str | None = None
    memories_consolidated: int = 0
    last_batch: MemoryWrite | None = None  # written with the end (a completion only)


class EndWritten(StrEnum):
    WRITTEN = "written"
    TASK_LOST = "task_lost"  # another worker holds the task now: nothing written
    JOB_GONE = "job_gone"  # the job was no longer running (the sweeper ended it)


class _RollBack(Exception):
    """Leaves an end's transaction without writing anything."""

    def __init__(self, written: EndWritten) -> None:
        super().__init__(written.value)
        self.written = written


class JobQueue:
    """Claims consolidation jobs with their tasks, and ends them."""

    def __init__(self, db: DatabaseService, queue: TaskQueueService, *, clock: Clock) -> None:
        self._db = db
        self._queue = queue
        self._clock = clock

    def claim(self, worker_id: str) -> ClaimedJob | EndedUnrun | None:
        """Claim the oldest due task and start its job, as one unit; None if nothing
        was due. A job that ended meanwhile is never run: its task is finished."""
        parameters = self._queue.claim_parameters(_TASK_TYPES, worker_id)
        started = self._db.backend.claim_and_start(self._db, parameters)
        if started is None:
            return None
        task, job = started.task, started.job
        if job is None:
            with self._db.transaction() as session:
                self._queue.complete(session=session, task=task, worker_id=worker_id)
            return EndedUnrun(task)
        return ClaimedJob(
            task=task,
            id=job.id,
            project_id=job.project_id,
            scope=ConsolidationScope.model_validate(job.scope),
            previous_result=job.result,
            cancel_requested=job.cancel_requested_at is not None,
        )

    def next_claimable_at(self) -> datetime | None:
        """When the earliest queued consolidation task becomes claimable."""
        with self._db.read() as session:
            return self._queue.next_available_at(session=session, task_types=_TASK_TYPES)

    def end(self, job: ClaimedJob, worker_id: str, ending: Ending) -> EndWritten:
        """Write `ending` for `job` and its task in one transaction, or nothing at all."""
        write = self._complete if ending.status is JobStatus.COMPLETED else self._settle
        try:
            with self._db.transaction() as session:
                written = write(session, job, worker_id, ending)
                if written is not EndWritten.WRITTEN:
                    raise _RollBack(written)
        except _RollBack as nothing:
            return nothing.written
        return EndWritten.WRITTEN

    def _complete(
        self, session: Session, job: ClaimedJob, worker_id: str, ending: Ending
    ) -> EndWritten:
        """The task done, the last batch written, the job completed and the cooldown
        started: one statement on PostgreSQL."""
        completion = self._db.backend.complete(
            session,
            task=self._queue.complete_parameters(job.task, worker_id),
            finish=_finish_parameters(job.id, ending, self._clock()),
            starts_cooldown=_starts_cooldown(ending),
            memories=ending.last_batch,
        )
        if not completion.task_held:
            self._queue.report_not_held(job.task, worker_id)
            return EndWritten.TASK_LOST
        return EndWritten.WRITTEN if completion.job_was_running else EndWritten.JOB_GONE

    def _settle(
        self, session: Session, job: ClaimedJob, worker_id: str, ending: Ending
    ) -> EndWritten:
        """The task settled as `ending.task` says, then the job's new status and, if
        the end starts it, the project's cooldown."""
        if not self._settle_task(session, job.task, worker_id, ending):
            return EndWritten.TASK_LOST
        now = self._clock()
        finish = job_store.finish_statement(
            with_result=ending.result is not None, final=ending.status not in ACTIVE_JOB_STATUSES
        )
        if execute_counting(session, finish, _finish_parameters(job.id, ending, now)) != 1:
            return EndWritten.JOB_GONE
        if _starts_cooldown(ending):
            project_store.start_cooldown(session, [job.project_id], at=now)
        return EndWritten.WRITTEN

    def _settle_task(
        self, session: Session, task: ClaimedTask, worker_id: str, ending: Ending
    ) -> bool:
        if ending.task is TaskEnd.HANDED_BACK:
            return self._queue.release(session=session, task=task, worker_id=worker_id)
        if ending.task is TaskEnd.FAILED:
            error = ending.error or "failed"
            failed = self._queue.fail(session=session, task=task, worker_id=worker_id, error=error)
            return failed is not FailOutcome.NOT_HELD
        return self._queue.complete(session=session, task=task, worker_id=worker_id)


_TASK_TYPES: Iterable[str] = (job_store.CONSOLIDATION_TASK,)


def _starts_cooldown(ending: Ending) -> bool:
    return starts_cooldown(ending.status, ending.memories_consolidated)


def _finish_parameters(job_id: int, ending: Ending, now: datetime) -> dict[str, Any]:
    return job_store.finish_parameters(
        job_id, status=ending.status, now=now, result=ending.result, error=ending.error
    )
