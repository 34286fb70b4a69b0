"""PostgreSQL's engine: few round trips, no lock waits between workers.

- A claim and its job's start are one autocommitted statement, and a job's last batch,
  its completion, its task's and the project's cooldown are one statement: their
  parts are data-modifying CTEs. Each part after the queue row's runs only if that
  row was still this worker's (the fence, invariant 6), and the parts take their
  locks in the order separate statements would (invariant 7, docs/invariants.md).
- A batch of tasks or of memories is one statement, passed as arrays (`unnest`).
- Enqueueing NOTIFYs the queue's channel (delivered at commit); a QueueListener wakes
  the workers.
- A purge picks rows with `FOR UPDATE SKIP LOCKED` and deletes through `= ANY(ARRAY(…))`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Boolean,
    Connection,
    Select,
    String,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from omoi_os.engines.base import Completion, DatabaseEngine, Pools, Started
from omoi_os.engines.listener import NOTIFY_CHANNEL, QueueListener
from omoi_os.models import QueuedTask, TaskState
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store
from omoi_os.store import projects as project_store
from omoi_os.store import tasks as task_store
from omoi_os.store.sql import InstantBefore, execute_counting, insert_ignoring_conflicts

if TYPE_CHECKING:
    from omoi_os.store.memories import MemoryWrite
    from omoi_os.store.retention import Batch, History


class PostgresEngine(DatabaseEngine):
    name = "postgresql"

    @contextmanager
    def single_statement(self, db: Pools, *, read_only: bool) -> Iterator[Connection]:
        # Autocommitted: the statement is its own transaction, with no BEGIN and
        # COMMIT round trips around it.
        with db.autocommit_engine.connect() as connection:
            yield connection

    def read_clock(self, connection: Connection) -> datetime | None:
        # clock_timestamp(), not now(): now() is the transaction's start.
        now: datetime = connection.execute(select(func.clock_timestamp())).scalar_one()
        return now

    def enqueue(self, session: Session, rows: list[dict[str, Any]]) -> int:
        first = rows[0]
        parameters = {
            "task_type": first["task_type"],
            "max_attempts": first["max_attempts"],
            "created_at": first["created_at"],
            "task_ids": [row["task_id"] for row in rows],
            "available_at": [row["available_at"] for row in rows],
        }
        return execute_counting(session, _enqueue_arrays(), parameters)

    def notify(self, session: Session, task_type: str) -> None:
        session.execute(select(func.pg_notify(NOTIFY_CHANNEL, task_type)))

    def listener(self, database_url: str, on_notify: Callable[[], None]) -> QueueListener:
        return QueueListener(database_url, on_notify)

    def claim_and_start(self, db: Pools, parameters: dict[str, Any]) -> Started | None:
        with self.single_statement(db, read_only=False) as connection:
            row = connection.execute(_claim_and_start(), parameters).one_or_none()
        if row is None:
            return None
        width = len(task_store.CLAIM_COLUMNS)
        task, job = row[:width], row[width:]
        started = None if job[0] is None else job_store.StartedJob(*job)
        return Started(task_store.ClaimedTask(*task), started)

    def complete(
        self,
        session: Session,
        *,
        task: dict[str, Any],
        finish: dict[str, Any],
        starts_cooldown: bool,
        memories: MemoryWrite | None,
    ) -> Completion:
        parameters = task | finish | {"starts_cooldown": starts_cooldown}
        if memories is not None:
            parameters |= memories.parameters()
        statement = _complete_all(None if memories is None else memories.consolidates)
        counts = session.connection().execute(statement, parameters).one()
        return Completion(task_held=counts.done == 1, job_was_running=counts.finished == 1)

    def write_memories(self, session: Session, write: MemoryWrite) -> None:
        statement = memory_store.write_as_arrays(consolidates=write.consolidates)
        session.connection().execute(statement, write.parameters())

    def lock_for_purge(self, pick: Select[Any], history: History) -> Select[Any]:
        return pick.with_for_update(of=history.table, skip_locked=True)

    def delete_picked(
        self, session: Session, history: History, pick: Select[Any], resume_from: datetime | None
    ) -> Batch:
        # `= ANY(ARRAY(pick))`: the pick runs once and its rows are deleted through the
        # primary key, where an IN subquery may be planned as a hash join over the
        # whole table (seen: a sequential scan of every task, live queue included, in
        # each batch). The batch is summed up in SQL: one row comes back, not one per
        # deleted row.
        from omoi_os.store.retention import Batch

        picked = history.key == any_(func.array(pick.scalar_subquery()))
        gone = delete(history.table).where(picked).returning(history.age).cte("gone")
        deleted, newest = session.execute(select(func.count(), func.max(gone.c[0]))).one()
        return Batch(deleted, newest or resume_from)


@cache
def _enqueue_arrays() -> Any:
    """Any number of tasks of one type in one INSERT, their ids and availability
    passed as two arrays."""
    tasks = task_store.TASKS
    batch = (
        func.unnest(
            cast(bindparam("task_ids"), ARRAY(String)),
            cast(bindparam("available_at"), ARRAY(TIMESTAMP(timezone=True))),
        )
        .table_valued("task_id", "available_at")
        .render_derived(name="t")
    )
    rows = select(
        bindparam("task_type", type_=String()),
        batch.c.task_id,
        literal({}, tasks.c.payload.type),
        literal(TaskState.QUEUED.value),
        literal(0),
        bindparam("max_attempts"),
        batch.c.available_at,
        bindparam("created_at", type_=tasks.c.created_at.type),
    ).select_from(batch)
    columns = list(task_store.QUEUE_COLUMNS)
    return insert_ignoring_conflicts(QueuedTask).from_select(columns, rows)


@cache
def _claim_and_start() -> Select[Any]:
    claimed = task_store.CLAIM.cte("claimed")
    job_id = cast(claimed.c.task_id, BigInteger)
    started = job_store.start_statement(job_id).cte("started")
    return select(*claimed.c, *started.c).select_from(
        claimed.outerjoin(started, started.c.id == job_id)
    )


@cache
def _complete_all(memories: bool | None) -> Select[Any]:
    """The task done, then (if `memories` is not None) the last batch's memories
    written (consolidated if True, re-tiered if False), the job completed and the
    project's cooldown started. Every part after the first runs only if the task was
    still held. PostgreSQL runs the parts as the final SELECT first reads them, so
    they take their locks in the order the separate statements did: the queue row
    (the first lock, as a batch's lease is), the memories, the job, the project."""
    done = task_store.COMPLETE.returning(task_store.TASKS.c.id).cte("done")
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
        write = memory_store.write_as_arrays(consolidates=memories)
        marked = write.where(task_held).returning(write.table.c.id).cte("marked")
        parts.insert(1, marked)
    counts = [select(func.count()).select_from(part).scalar_subquery() for part in parts]
    return select(*(count.label(part.name) for count, part in zip(counts, parts, strict=True)))


@compiles(InstantBefore, "postgresql")
def _instant_before(element: InstantBefore, compiler: SQLCompiler, **kw: Any) -> str:
    instant, seconds = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({instant} - make_interval(secs => {seconds}))"
