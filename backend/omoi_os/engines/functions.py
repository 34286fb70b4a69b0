"""SQL functions that each database spells its own way, rendered per database.

`instant_before(instant, seconds)`: the instant `seconds` (an integer SQL expression,
such as a project's own cooldown) before `instant`, comparable with our timestamp
columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from omoi_os.models.base import UTCDateTime


class _InstantBefore(FunctionElement[datetime]):
    type = UTCDateTime()
    name = "instant_before"
    inherit_cache = True


def instant_before(instant: datetime, seconds: ColumnElement[Any]) -> ColumnElement[datetime]:
    """SQL: the instant `seconds` before `instant` (a per-row interval)."""
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
