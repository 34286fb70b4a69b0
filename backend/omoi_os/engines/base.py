"""The one interface behind which PostgreSQL and SQLite differ.

Everything else (the triggers, the queue, the worker, the sweeper, retention) writes
portable SQL through the store and asks the engine only for what the two databases do
differently: fusing several writes into one statement (data-modifying CTEs), passing a
batch as arrays (`unnest`), autocommitting a single statement, waking workers
(LISTEN/NOTIFY), and picking rows that other transactions have not locked
(`SKIP LOCKED`). PostgreSQL's engine does these in few round trips; SQLite's does the
same writes one after the other, under the database's single write lock.

Engines hold no state: `engine_for` (omoi_os.engines) picks the one for a connection's
database, once per DatabaseService (which is a `Pools`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Select
from sqlalchemy import Engine as SQLAlchemyEngine
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from omoi_os.engines.listener import QueueListener
    from omoi_os.store.jobs import StartedJob
    from omoi_os.store.memories import MemoryWrite
    from omoi_os.store.retention import Batch, History
    from omoi_os.store.tasks import ClaimedTask


class Pools(Protocol):
    """The connections an engine may open: one pool, lent as it is or autocommitting."""

    @property
    def engine(self) -> SQLAlchemyEngine: ...

    @property
    def autocommit_engine(self) -> SQLAlchemyEngine: ...


@dataclass(frozen=True)
class Started:
    """A claim and its job's start: the claimed task, and the started job (None if the
    job ended meanwhile and must not run)."""

    task: ClaimedTask
    job: StartedJob | None


@dataclass(frozen=True)
class Completion:
    """What completing a job with its last batch wrote: False where this worker no
    longer held the task, or the job was no longer running (the caller then rolls
    the transaction back)."""

    task_held: bool
    job_was_running: bool


class DatabaseEngine(ABC):
    """What one database does its own way; every method works on what it is given
    (a session, a connection, an SQLAlchemy engine) and keeps nothing."""

    name: str

    # --- connections -------------------------------------------------------------------

    @abstractmethod
    def single_statement(self, db: Pools, *, read_only: bool) -> AbstractContextManager[Connection]:
        """A connection of `db`'s pool for work that is one statement (a read, or a
        write whose parts are one statement's CTEs); `read_only` never takes a write
        lock."""

    @abstractmethod
    def read_clock(self, connection: Connection) -> datetime | None:
        """The database server's current time (UTC), or None where the database runs
        in this process and its clock is this machine's."""

    # --- the queue ---------------------------------------------------------------------

    @abstractmethod
    def enqueue(self, session: Session, rows: list[dict[str, Any]]) -> int:
        """Insert the queue rows `rows` (the task_queue columns; each row's task_type,
        max_attempts and created_at alike), skipping any whose (task_type, task_id) is
        queued already. Returns how many were inserted."""

    @abstractmethod
    def notify(self, session: Session, task_type: str) -> None:
        """Tell listening workers, at commit, that tasks of `task_type` were queued."""

    @abstractmethod
    def listener(self, database_url: str, on_notify: Callable[[], None]) -> QueueListener | None:
        """A thread that calls `on_notify` whenever tasks are queued, or None where
        workers can only poll."""

    # --- a job and its task --------------------------------------------------------------

    @abstractmethod
    def claim_and_start(self, db: Pools, parameters: dict[str, Any]) -> Started | None:
        """Claim the oldest due task (store.tasks.CLAIM's parameters) and start its job
        (store.jobs.START), as one unit; None if nothing was due."""

    @abstractmethod
    def complete(
        self,
        session: Session,
        *,
        task: dict[str, Any],
        finish: dict[str, Any],
        starts_cooldown: bool,
        memories: MemoryWrite | None,
    ) -> Completion:
        """In the caller's transaction: the task done (store.tasks.COMPLETE's fenced
        parameters `task`), then, only if it was still held, the last batch's
        `memories` written, the job completed (store.jobs.finish_statement's
        parameters `finish`) and, if `starts_cooldown`, the project's cooldown started
        from the job's end, taking their locks in that order (invariant 7)."""

    # --- memories ------------------------------------------------------------------------

    @abstractmethod
    def write_memories(self, session: Session, write: MemoryWrite) -> None:
        """Store a batch's scores and tiers (and, if it consolidates, mark its memories)."""

    # --- retention -----------------------------------------------------------------------

    @abstractmethod
    def lock_for_purge(self, pick: Select[Any], history: History) -> Select[Any]:
        """`pick` (the rows of a purge batch) locked so that concurrent purges take
        other rows instead of waiting, where the database has row locks."""

    @abstractmethod
    def delete_picked(
        self, session: Session, history: History, pick: Select[Any], resume_from: datetime | None
    ) -> Batch:
        """Delete the rows `pick` selects; how many, and the newest age deleted."""
