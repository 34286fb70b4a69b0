"""What went wrong, in one short line that is safe to store in a job and to serve.

A database error's own text (SQLAlchemy's) carries the whole statement and its bound
parameters: claim tokens, worker ids, a host's memory text. What a job records, and
the API serves, is the driver's first line and the table it names, never those.
"""

from __future__ import annotations

from sqlalchemy.exc import StatementError

# Long enough for a database's message and a table; short enough to list jobs by.
MAX_FAILURE_LENGTH = 300


def describe_failure(exc: BaseException) -> str:
    """`Kind: first line of its message`, at most MAX_FAILURE_LENGTH characters; for a
    database error the driver's error and the table it names, without the SQL."""
    if isinstance(exc, StatementError) and exc.orig is not None:
        cause = exc.orig
        table = getattr(getattr(cause, "diag", None), "table_name", None)
        text = f"{type(cause).__name__}: {first_line(cause)}"
        if table:
            text += f" (table {table})"
    else:
        text = f"{type(exc).__name__}: {first_line(exc)}"
    return text if len(text) <= MAX_FAILURE_LENGTH else text[: MAX_FAILURE_LENGTH - 1] + "…"


def first_line(error: BaseException | None) -> str:
    """The first line of an error's message (its repr when it has none)."""
    message = str(error).strip()
    return message.splitlines()[0] if message else repr(error)
