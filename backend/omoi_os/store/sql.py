"""Statement helpers every SQL owner shares."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, CursorResult, Executable, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
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


def insert_ignoring_conflicts(model: type[Any]) -> postgresql.Insert:
    """`INSERT … ON CONFLICT DO NOTHING` for `model`, on either database.

    The database decides uniqueness; a conflict is an answer ("already there"),
    not an error that would abort a PostgreSQL transaction. The construct is
    PostgreSQL's, but its `ON CONFLICT DO NOTHING` renders the same on SQLite (3.24+),
    so one statement serves both.
    """
    # On the Table, not the mapped class: a Core statement reports rowcount and
    # RETURNING as the database gives them, with no ORM bookkeeping in between.
    return postgresql.insert(model.__table__).on_conflict_do_nothing()


class InstantBefore(FunctionElement[datetime]):
    """`instant` minus `seconds` (an integer SQL expression); each database's engine
    renders it its own way (omoi_os.engines)."""

    type = UTCDateTime()
    name = "instant_before"
    inherit_cache = True


def instant_before(instant: datetime, seconds: ColumnElement[Any]) -> ColumnElement[datetime]:
    """SQL: the instant `seconds` before `instant`, comparable with our timestamp
    columns (a per-row interval, such as a project's own cooldown)."""
    return InstantBefore(bindparam(None, instant, type_=UTCDateTime()), seconds)
