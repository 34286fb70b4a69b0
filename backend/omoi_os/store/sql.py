"""Statement helpers every SQL owner shares."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, CursorResult, Executable, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from omoi_os.models.base import UTCDateTime


class Bound(NamedTuple):
    """A statement built once and the parameters of one execution of it:
    `session.execute(*bound)`."""

    statement: Executable
    parameters: dict[str, Any]


def execute_counting(
    session: Session, statement: Executable, parameters: dict[str, Any] | None = None
) -> int:
    """Run an INSERT/UPDATE/DELETE and return how many rows it changed."""
    result = session.execute(statement, parameters, execution_options={"preserve_rowcount": True})
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


class _InstantBefore(FunctionElement[datetime]):
    """`instant` minus `seconds` (an integer SQL expression); see instant_before."""

    type = UTCDateTime()
    name = "instant_before"
    inherit_cache = True


def instant_before(instant: datetime, seconds: ColumnElement[Any]) -> ColumnElement[datetime]:
    """SQL: the instant `seconds` before `instant`, comparable with our timestamp
    columns (a per-row interval, such as a project's own cooldown)."""
    return _InstantBefore(bindparam(None, instant, type_=UTCDateTime()), seconds)


@compiles(_InstantBefore, "postgresql")
def _instant_before_postgresql(element: _InstantBefore, compiler: SQLCompiler, **kw: Any) -> str:
    instant, seconds = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({instant} - make_interval(secs => {seconds}))"


@compiles(_InstantBefore, "sqlite")
def _instant_before_sqlite(element: _InstantBefore, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps instants as text, 'YYYY-MM-DD HH:MM:SS.ffffff' (UTCDateTime), and
    # compares them as text: the result is written in that same shape (strftime gives
    # milliseconds; three zeros make the microseconds).
    instant, seconds = (compiler.process(clause, **kw) for clause in element.clauses)
    shift = f"'-' || ({seconds}) || ' seconds'"
    return f"(strftime('%Y-%m-%d %H:%M:%f', {instant}, {shift}) || '000')"
