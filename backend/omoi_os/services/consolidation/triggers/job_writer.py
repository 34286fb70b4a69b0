"""The one write path of every trigger: insert the jobs and queue their tasks, in the
caller's transaction, so a job and its task commit together or not at all
(invariant 3, docs/invariants.md).

The database decides what is created: its indexes allow one active job per project
and one scheduled job per project per tick, so a job that would break either is
simply not inserted (and gets no task).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from omoi_os.clock import Clock
from omoi_os.models import TriggerType
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store


class JobWriter:
    """Writes jobs and their queue tasks."""

    def __init__(self, queue: TaskQueueService, *, clock: Clock) -> None:
        self._queue = queue
        self._clock = clock

    def write(
        self,
        session: Session,
        project_ids: Select[Any],
        *,
        trigger_type: TriggerType,
        scope: ConsolidationScope,
        triggered_by: str,
        scheduled_for: datetime | None = None,
        delay: timedelta = timedelta(0),
        claimable_at_of: Callable[[job_store.NewJob], datetime] | None = None,
        project_paused: bool = False,
    ) -> list[job_store.NewJob]:
        """A pending job and its queue task for each project `project_ids` yields that
        the database admits; returns the jobs created. Their tasks become claimable
        `delay` after now (a debounce), or each at `claimable_at_of(job)` if given (a
        spread tick); the job rows say when, and whether their project was paused."""
        now = self._clock()
        available_at = now + delay
        rows = job_store.job_rows(
            project_ids,
            trigger_type=trigger_type,
            scope=scope.to_document(),
            triggered_by=triggered_by,
            scheduled_for=scheduled_for,
            now=now,
            claimable_at=available_at,
            project_paused=project_paused,
        )
        created = job_store.insert_jobs(session, rows)
        if claimable_at_of is None:
            tasks = [(job_store.task_id_for_job(job.id), available_at) for job in created]
        else:
            claimable_at = {job.id: claimable_at_of(job) for job in created}
            job_store.set_claimable_at(session, claimable_at)
            tasks = [(job_store.task_id_for_job(id_), at) for id_, at in claimable_at.items()]
        queued = self._queue.enqueue(
            session=session, task_type=job_store.CONSOLIDATION_TASK, tasks=tasks
        )
        if queued != len(created):  # a job without its task would never run: roll back
            raise RuntimeError(f"{len(created)} jobs written but {queued} tasks queued")
        return created

    def write_tick(
        self,
        session: Session,
        project_ids: Select[Any],
        *,
        scope: ConsolidationScope,
        triggered_by: str,
        tick: datetime,
    ) -> int:
        """A scheduled job, claimable now, and its queue task for each project
        `project_ids` yields that the database admits; returns how many. Set-based end
        to end: a tick over 100,000 projects brings no job id to Python (allocating an
        object per job made the garbage collector stop every thread of the host's
        process for about 100 ms)."""
        now = self._clock()
        rows = job_store.job_rows(
            project_ids,
            trigger_type=TriggerType.SCHEDULED,
            scope=scope.to_document(),
            triggered_by=triggered_by,
            scheduled_for=tick,
            now=now,
            claimable_at=now,
        )
        created = job_store.insert_jobs_counting(session, rows)
        queued = self._queue.enqueue_select(
            session=session,
            task_type=job_store.CONSOLIDATION_TASK,
            task_ids=job_store.task_ids_of_tick(tick),
        )
        if queued != created:  # a job without its task would never run: roll back
            raise RuntimeError(f"{created} jobs written but {queued} tasks queued")
        return created
