"""Statement helpers every SQL owner shares."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from sqlalchemy import CursorResult, Executable
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


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
