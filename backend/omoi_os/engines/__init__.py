"""One engine per database: everything PostgreSQL and SQLite do differently.

`engine_for(x)` gives the engine of a session's, a connection's or an SQLAlchemy
engine's database. It is the one place that asks which database it is; the engines
themselves are in `postgresql.py` and `sqlite.py`, behind the interface in `base.py`.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Connection
from sqlalchemy import Engine as SQLAlchemyEngine
from sqlalchemy.orm import Session

from omoi_os.engines.base import DatabaseEngine

__all__ = ["DatabaseEngine", "engine_for"]


def engine_for(bind: Session | Connection | SQLAlchemyEngine) -> DatabaseEngine:
    """The engine of `bind`'s database (sqlite or postgresql)."""
    if isinstance(bind, Session):
        return _engine_named(bind.get_bind().dialect.name)
    return _engine_named(bind.dialect.name)


@cache
def _engine_named(name: str) -> DatabaseEngine:
    if name == "postgresql":
        from omoi_os.engines.postgresql import PostgresEngine

        return PostgresEngine()
    if name == "sqlite":
        from omoi_os.engines.sqlite import SQLiteEngine

        return SQLiteEngine()
    raise ValueError(f"{name!r} databases are not supported (use sqlite or postgresql)")
