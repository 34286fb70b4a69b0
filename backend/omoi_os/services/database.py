"""DatabaseService: the one database handle every service takes.

It holds an engine and the session factory bound to it. Services never keep a
session: each unit of work opens one short transaction (`with db.transaction() as
session:`), or a read-only one (`db.read()`), and callers that own a larger unit
of work pass their session down explicitly.

A host application can hand over its own `Engine` (`DatabaseService.from_engine`):
the service then uses the host's pool and never disposes of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from omoi_os.config import AppSettings, get_app_settings, normalise_database_url
from omoi_os.database_schema import check_schema_supported
from omoi_os.engines import DatabaseEngine, engine_for

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 10
DEFAULT_POOL_SIZE = 16  # AppSettings().database_pool_size with the default settings


class DatabaseService:
    """One engine, the sessions bound to it, and the transaction scopes."""

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: AppSettings | None = None,
        engine: Engine | None = None,
    ) -> None:
        """Open an engine for `url` (or the settings' database URL). With `engine`, use
        that one instead and leave its disposal to whoever made it. Our tables are in
        the settings' `database_schema` (unset: the connection's default schema)."""
        settings = settings or get_app_settings()
        if engine is not None:
            self._root, self._owns_engine = engine, False
        else:
            resolved = normalise_database_url(url) if url else settings.database_url
            engine = create_database_engine(resolved, pool_size=settings.database_pool_size)
            self._root, self._owns_engine = engine, True
        self.schema = settings.database_schema
        check_schema_supported(engine.dialect.name, self.schema)
        # Every statement of ours names its tables without a schema; this map puts
        # them in ours, on the same pool (a host's engine is not changed).
        self.schema_translate_map: dict[str | None, str | None] = (
            {None: self.schema} if self.schema else {}
        )
        self.engine = (
            engine.execution_options(schema_translate_map=self.schema_translate_map)
            if self.schema
            else engine
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The same pool, its connections lent in autocommit mode (single_statement).
        self.autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # What this database does its own way (omoi_os.engines).
        self.backend: DatabaseEngine = engine_for(self.engine)

    @classmethod
    def from_engine(cls, engine: Engine, *, settings: AppSettings | None = None) -> DatabaseService:
        """Use a host application's engine (and its pool); dispose() leaves it open."""
        return cls(engine=engine, settings=settings)

    @classmethod
    def owning(cls, engine: Engine, *, settings: AppSettings | None = None) -> DatabaseService:
        """Use `engine`, made for us: dispose() closes it."""
        service = cls(engine=engine, settings=settings)
        service._owns_engine = True
        return service

    @classmethod
    def for_session(
        cls, session: Session, *, settings: AppSettings | None = None
    ) -> DatabaseService:
        """Use the engine a session is bound to (the session itself is never shared)."""
        bind = session.get_bind()
        return cls(engine=bind.engine if isinstance(bind, Connection) else bind, settings=settings)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.backend.name

    def get_session(self) -> Session:
        """A new session; the caller closes it (or uses it as a context manager)."""
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only. On SQLite it begins DEFERRED, so it never takes
        the write lock: WAL lets such readers run beside the one writer."""
        with self._sessions() as session:
            session.connection(execution_options={"sqlite_begin": "DEFERRED"})
            yield session

    def single_statement(self, *, read_only: bool = False) -> AbstractContextManager[Connection]:
        """A connection for work that is one statement (a read, or a write whose parts
        are one statement's CTEs): on PostgreSQL it autocommits, with no BEGIN and
        COMMIT round trips around it; on SQLite it is an ordinary transaction, which a
        `read_only` one begins DEFERRED, as `read` does."""
        return self.backend.single_statement(self, read_only=read_only)

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (never waits for SQLite's
        write lock)."""
        with self.read() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection, unless the engine belongs to a host."""
        if self._owns_engine:
            self._root.dispose()


# The synchronous driver our threads use for each async driver a host's engine may have.
SYNC_DRIVERS = {
    "postgresql+psycopg_async": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "sqlite+aiosqlite": "sqlite",
}


class AsyncDriverUnsupported(ValueError):
    """A host's async engine uses a driver we have no synchronous twin for."""

    def __init__(self, drivername: str) -> None:
        supported = ", ".join(sorted(SYNC_DRIVERS))
        super().__init__(f"async driver {drivername!r} is not supported (use one of {supported})")


def sync_twin_of(async_engine: Any, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """A synchronous engine on the database of a host's `AsyncEngine`, with the sync
    driver of the same family, for our scheduler and worker threads.

    Why a second pool: our core is synchronous SQLAlchemy on its own threads, and an
    async engine's connections can only be used from its event loop (its sync_engine
    fails with MissingGreenlet on any other thread). Only the URL carries over: an
    asyncpg-only `connect_args` must be given as psycopg/libpq parameters in the URL."""
    url = async_engine.url
    if url.drivername not in SYNC_DRIVERS:
        raise AsyncDriverUnsupported(url.drivername)
    sync_url = url.set(drivername=SYNC_DRIVERS[url.drivername])
    return create_database_engine(
        sync_url.render_as_string(hide_password=False), pool_size=pool_size
    )


def create_database_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """An engine configured for the backend's use of `url`'s database, whose pool holds
    at most `pool_size` connections (see AppSettings.database_pool_size)."""
    parsed = make_url(url)
    pool = {"pool_size": pool_size, "max_overflow": 0}
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        return _sqlite_engine(url, {} if in_memory else pool)
    # No ping per checkout (a round trip before every transaction): a connection the
    # server dropped fails its first statement instead, which SQLAlchemy reports as a
    # disconnect and answers by replacing every pooled connection made before it.
    # LIFO hands out the most recently used connection, so idle ones can age out.
    # Bound parameters (claim tokens, a host's memory text) stay out of every error
    # message and log line (hide_parameters, on both engines).
    return create_engine(
        url,
        hide_parameters=True,
        pool_use_lifo=True,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S, "application_name": "omoi-os"},
        **pool,
    )


def _sqlite_engine(url: str, pool: dict[str, int]) -> Engine:
    engine = create_engine(
        url,
        hide_parameters=True,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **pool,
    )
    event.listen(engine, "do_connect", _make_sqlite_directory)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


class DatabaseDirectoryError(OSError):
    """The directory of a SQLite database file cannot be created or used."""


def _make_sqlite_directory(dialect: Any, _record: Any, cargs: Any, _cparams: Any) -> None:
    # At the first connection, not when the engine is built: building settings, an
    # engine or an app never creates a file.
    database = cargs[0] if cargs else None
    if not database or database == ":memory:" or str(database).startswith("file:"):
        return
    directory = Path(database).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseDirectoryError(
            f"cannot create the database's directory {directory}: {exc.strerror or exc}"
        ) from exc


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
    # read opt out (DatabaseService.read), so they never hold the lock.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


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
