"""Statement helpers every SQL owner shares."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from sqlalchemy import CursorResult, Executable
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from omoi_os.engines.functions import instant_before

__all__ = ["Bound", "execute_counting", "insert_ignoring_conflicts", "instant_before"]


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
