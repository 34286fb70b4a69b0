"""SQLite's engine: the same writes as PostgreSQL's, one statement after another.

SQLite has one writer at a time and runs in process, so what PostgreSQL fuses into
one statement to save round trips runs here as separate statements in one
transaction, under the database's single write lock, which makes them just as
atomic. There are no row locks to skip and no NOTIFY: workers poll.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, bindparam, delete
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from omoi_os.engines.base import Completion, DatabaseEngine, Pools, Started
from omoi_os.models import QueuedTask, TaskState
from omoi_os.store import jobs as job_store
from omoi_os.store import memories as memory_store
from omoi_os.store import projects as project_store
from omoi_os.store import tasks as task_store
from omoi_os.store.sql import InstantBefore, execute_counting, insert_ignoring_conflicts

if TYPE_CHECKING:
    from omoi_os.engines.listener import QueueListener
    from omoi_os.store.memories import MemoryWrite
    from omoi_os.store.retention import Batch, History


class SQLiteEngine(DatabaseEngine):
    name = "sqlite"

    @contextmanager
    def single_statement(self, db: Pools, *, read_only: bool) -> Iterator[Connection]:
        # An ordinary transaction (in process, its BEGIN costs no round trip); a
        # read-only one begins DEFERRED, so it never takes the write lock.
        with db.engine.connect() as connection:
            if read_only:
                connection.execution_options(sqlite_begin="DEFERRED")
            with connection.begin():
                yield connection

    def read_clock(self, connection: Connection) -> datetime | None:
        return None  # in process: its 'now' is this machine's clock

    def enqueue(self, session: Session, rows: list[dict[str, Any]]) -> int:
        return sum(execute_counting(session, _enqueue_one(), row) for row in rows)

    def notify(self, session: Session, task_type: str) -> None:
        """Nothing to do: SQLite's workers poll."""

    def listener(self, database_url: str, on_notify: Callable[[], None]) -> QueueListener | None:
        return None

    def claim_and_start(self, db: Pools, parameters: dict[str, Any]) -> Started | None:
        with Session(db.engine) as session, session.begin():
            claimed = task_store.claim(session, parameters)
            if not claimed:
                return None
            job_id = job_store.job_id_for_task(claimed[0].task_id)
            started = job_store.start_job(session, job_id, now=parameters["now"])
        return Started(claimed[0], started)

    def complete(
        self,
        session: Session,
        *,
        task: dict[str, Any],
        finish: dict[str, Any],
        starts_cooldown: bool,
        memories: MemoryWrite | None,
    ) -> Completion:
        if not execute_counting(session, task_store.COMPLETE, task):
            return Completion(task_held=False, job_was_running=False)
        if memories is not None:
            self.write_memories(session, memories)
        ended = job_store.finish_statement(with_result=True, final=True)
        statement = ended.returning(ended.table.c.project_id)
        finished = session.connection().execute(statement, finish).one_or_none()
        if finished is None:
            return Completion(task_held=True, job_was_running=False)
        if starts_cooldown:
            at = finish["finished_now"]
            project_store.start_cooldown(session, [finished.project_id], at=at)
        return Completion(task_held=True, job_was_running=True)

    def write_memories(self, session: Session, write: MemoryWrite) -> None:
        statement = memory_store.write_each(consolidates=write.consolidates)
        session.connection().execute(statement, write.rows())

    def lock_for_purge(self, pick: Select[Any], history: History) -> Select[Any]:
        return pick  # one writer at a time: nothing to skip

    def delete_picked(
        self, session: Session, history: History, pick: Select[Any], resume_from: datetime | None
    ) -> Batch:
        from omoi_os.store.retention import Batch

        statement = (
            delete(history.table)
            .where(history.key.in_(pick.scalar_subquery()))
            .returning(history.age)
        )
        ages = list(session.scalars(statement))
        return Batch(len(ages), max(ages, default=resume_from))


@cache
def _enqueue_one() -> Any:
    return insert_ignoring_conflicts(QueuedTask).values(
        task_type=bindparam("task_type"),
        task_id=bindparam("task_id"),
        payload={},
        state=TaskState.QUEUED,
        attempts=0,
        max_attempts=bindparam("max_attempts"),
        available_at=bindparam("available_at"),
        created_at=bindparam("created_at"),
    )


@compiles(InstantBefore, "sqlite")
def _instant_before(element: InstantBefore, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps instants as text, 'YYYY-MM-DD HH:MM:SS.ffffff' (UTCDateTime), and
    # compares them as text: the result is written in that same shape (strftime gives
    # milliseconds; three zeros make the microseconds).
    instant, seconds = (compiler.process(clause, **kw) for clause in element.clauses)
    shift = f"'-' || ({seconds}) || ' seconds'"
    return f"(strftime('%Y-%m-%d %H:%M:%f', {instant}, {shift}) || '000')"
