"""DatabaseService: the engine, the session factory and the transaction scope.

Services never keep a session: they take a session factory and open one short
transaction per unit of work (`with factory.begin() as session:`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from omoi_os.config import AppSettings, get_app_settings, normalise_database_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 10

SessionFactory = sessionmaker[Session]


class DatabaseService:
    """Owns one engine and hands out sessions bound to it."""

    def __init__(self, url: str | None = None, *, settings: AppSettings | None = None) -> None:
        self.url = (
            normalise_database_url(url) if url else (settings or get_app_settings()).database_url
        )
        self.engine = create_database_engine(self.url)
        self.session_factory: SessionFactory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    def get_session(self) -> Session:
        """A new session; the caller closes it (or uses it as a context manager)."""
        return self.session_factory()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        with self.session_factory.begin() as session:
            yield session

    def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def create_database_engine(url: str) -> Engine:
    """An engine configured for the backend's use of `url`'s database."""
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S, "application_name": "omoi-os"},
    )


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # SQLite has one writer. Taking the write lock at BEGIN makes concurrent
    # transactions wait for each other (busy_timeout) instead of failing with
    # "database is locked" when a reader later tries to write. Sessions that only
    # read opt out (read_session), so they never hold the lock.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def transaction_scope(factory: SessionFactory, session: Session | None = None) -> Iterator[Session]:
    """Join the caller's `session` (its owner commits) or run one new transaction."""
    if session is not None:
        yield session
        return
    with factory.begin() as new_session:
        yield new_session


def execute_counting(session: Session, statement: Executable) -> int:
    """Run an INSERT/UPDATE/DELETE and return how many rows it changed."""
    result = session.execute(statement, execution_options={"preserve_rowcount": True})
    return int(cast(CursorResult[Any], result).rowcount)


def insert_ignoring_conflicts(session: Session, model: type[Any]) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING` for `model` in the session's dialect.

    The database decides uniqueness; a conflict is an answer ("already there"),
    not an error that would abort a PostgreSQL transaction.
    """
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    # On the Table, not the mapped class: a Core statement reports rowcount and
    # RETURNING as the database gives them, with no ORM bookkeeping in between.
    return insert(model.__table__).on_conflict_do_nothing()


def engine_of(factory: SessionFactory) -> Engine:
    """The engine a session factory made by as_session_factory is bound to."""
    bind = factory.kw["bind"]
    if not isinstance(bind, Engine):
        raise TypeError(f"the session factory is bound to {type(bind).__name__}, not an Engine")
    return bind


def interrupt_statement(dbapi_connection: Any) -> None:
    """Cancel what a DBAPI connection is executing, from another thread (psycopg:
    a cancel request to the server; sqlite3: interrupt)."""
    cancel = getattr(dbapi_connection, "cancel_safe", None) or getattr(
        dbapi_connection, "cancel", None
    )
    if cancel is None:
        cancel = dbapi_connection.interrupt
    cancel()


def raw_connection(session: Session) -> Any:
    """The DBAPI connection under a session's current transaction."""
    return session.connection().connection.dbapi_connection


@contextmanager
def read_session(factory: SessionFactory) -> Iterator[Session]:
    """A session for reading only. On SQLite it begins DEFERRED, so it does not take
    the write lock: WAL lets such readers run beside the one writer."""
    with factory() as session:
        session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        yield session


def as_session_factory(db: Session | DatabaseService | SessionFactory | Engine) -> SessionFactory:
    """A session factory for whatever the caller has: a DatabaseService, a factory,
    an Engine, or a Session (only its engine is used; the session itself is not shared)."""
    if isinstance(db, DatabaseService):
        return db.session_factory
    if isinstance(db, sessionmaker):
        return db
    if isinstance(db, Session):
        bind = db.get_bind()
        db = bind.engine if isinstance(bind, Connection) else bind
    if isinstance(db, Engine):
        return sessionmaker(db, expire_on_commit=False)
    raise TypeError(f"cannot get sessions from {type(db).__name__}")
