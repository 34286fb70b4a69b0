"""A consolidation job and its queue task, moved together by the worker.

- Claim a task and start its job (pending, or running when reclaimed → running).
- Complete a task and its job in the transaction of the job's last batch, writing that
  batch's memories and starting the project's cooldown with them.

On PostgreSQL each is one statement whose parts are data-modifying CTEs: the claim
runs on its own, autocommitted (one round trip where BEGIN, two statements and COMMIT
took four), and the completion is the last batch's only write (one statement where
a lease renewal and four writes were five). Each part after the queue row's runs only
if that row was still this worker's (the fence, invariant 6, docs/invariants.md), and
the parts take their locks in the order the separate statements did (invariant 7).
On SQLite the same writes run one after the other in one transaction, under the
database's single write lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Boolean, Select, bindparam, cast, exists, func, select
from sqlalchemy.orm import Session

from omoi_os.models import JobStatus
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import CLAIM, COMPLETE, ClaimedTask, TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store
from omoi_os.store import projects as project_store


@dataclass(frozen=True)
class Claimed:
    """A claimed task, and its job if that could start (None: the job ended meanwhile,
    cancelled or timed out, and must not run; the caller drops the task)."""

    task: ClaimedTask
    job: job_store.StartedJob | None


@cache
def _claim_and_start() -> Select[Any]:
    claimed = CLAIM.cte("claimed")
    job_id = cast(claimed.c.task_id, BigInteger)
    started = job_store.start_statement(job_id).cte("started")
    return select(*claimed.c, *started.c).select_from(
        claimed.outerjoin(started, started.c.id == job_id)
    )


def claim_and_start(
    db: DatabaseService, queue: TaskQueueService, *, task_types: Iterable[str], worker_id: str
) -> Claimed | None:
    """Claim the oldest due task of `task_types` and start its job, as one unit."""
    parameters = queue.claim_parameters(task_types, worker_id)
    if db.dialect == "postgresql":
        with db.single_statement() as connection:
            row = connection.execute(_claim_and_start(), parameters).one_or_none()
        if row is None:
            return None
        task = ClaimedTask(*row[:7])
        started = row[7:]
        return Claimed(task, None if started[0] is None else job_store.StartedJob(*started))
    with db.transaction() as session:
        rows = session.connection().execute(CLAIM, parameters).all()
        if not rows:
            return None
        task = ClaimedTask(*rows[0])
        job_id = job_store.job_id_for_task(task.task_id)
        return Claimed(task, job_store.start_job(session, job_id, now=parameters["now"]))


@dataclass(frozen=True)
class Completion:
    """What completing a job wrote: False where this worker no longer held the task,
    or the job was no longer running (then the caller rolls the transaction back)."""

    task_held: bool
    job_was_running: bool


@cache
def _complete_all(memories: bool | None) -> Select[Any]:
    """The task done, then (if `memories` is not None) the last batch's memories
    written (consolidated if True, re-tiered if False), the job completed and the
    project's cooldown started. Every part after the first runs only if the task was
    still held. PostgreSQL runs the parts as the final SELECT first reads them, so
    they take their locks in the order the separate statements did: the queue row
    (the first lock, as a batch's lease is), the memories, the job, the project."""
    done = COMPLETE.returning(COMPLETE.table.c.id).cte("done")
    task_held = exists(select(done.c.id))
    finish = job_store.finish_statement(with_result=True, final=True)
    finished = finish.where(task_held).returning(finish.table.c.project_id).cte("finished")
    cooldown = project_store.cooldown_statement(finished.c.project_id, bindparam("finished_now"))
    cooled = (
        cooldown.where(bindparam("starts_cooldown", type_=Boolean))
        .returning(cooldown.table.c.id)
        .cte("cooled")
    )
    parts = [done, finished, cooled]
    if memories is not None:
        gate = "AND EXISTS (SELECT FROM done)"
        parts.insert(1, memory_store.write_cte(consolidates=memories, only_if=gate, name="marked"))
    counts = [select(func.count()).select_from(part).scalar_subquery() for part in parts]
    return select(*(count.label(part.name) for count, part in zip(counts, parts, strict=True)))


def complete(
    session: Session,
    queue: TaskQueueService,
    task: ClaimedTask,
    *,
    worker_id: str,
    job_id: int,
    project_id: uuid.UUID,
    result: dict[str, Any],
    now: datetime,
    starts_cooldown: bool,
    memories: memory_store.MemoryWrite | None = None,
) -> Completion:
    """Mark the task done, write the last batch's `memories`, mark the job `completed`
    with its result and, if `starts_cooldown`, start the project's cooldown from
    `now`, in the caller's transaction (the order in which the locks are taken)."""
    if session.get_bind().dialect.name == "postgresql":
        finish = job_store.finish_parameters(
            job_id, status=JobStatus.COMPLETED, now=now, result=result
        )
        parameters = queue.complete_parameters(task, worker_id) | finish
        parameters["starts_cooldown"] = starts_cooldown
        if memories is not None:
            parameters |= memories.parameters()
        statement = _complete_all(None if memories is None else memories.consolidates)
        counts = session.connection().execute(statement, parameters).one()
        if counts.done != 1:
            queue.report_not_held(task, worker_id)
        return Completion(task_held=counts.done == 1, job_was_running=counts.finished == 1)
    if not queue.complete(session=session, task=task, worker_id=worker_id):
        return Completion(task_held=False, job_was_running=False)
    if memories is not None:
        memory_store.write(session, memories)
    if not job_store.finish_job(
        session, job_id, status=JobStatus.COMPLETED, now=now, result=result
    ):
        return Completion(task_held=True, job_was_running=False)
    if starts_cooldown:
        project_store.start_cooldown(session, [project_id], at=now)
    return Completion(task_held=True, job_was_running=True)
