"""The access log without query strings' values: a token a client put in the URL
(`?token=…`, `?api_key=…`) must not land in a log file."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
_PATH_ARG = 2  # uvicorn's access line: (client, method, path with query, http version, status)


class QueryStringRedaction(logging.Filter):
    """Masks every value of the query string in uvicorn's access lines (the names are
    kept: `/x?token=***&limit=***`). Add it to the `uvicorn.access` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _PATH_ARG:
            path = args[_PATH_ARG]
            if isinstance(path, str):
                record.args = (*args[:_PATH_ARG], redacted_path(path), *args[_PATH_ARG + 1 :])
        return True


def redacted_path(path: str) -> str:
    """`path` with each query value replaced by ***."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    names = (part.partition("=")[0] for part in query.split("&"))
    return f"{base}?{'&'.join(f'{name}=***' for name in names)}"


def redact_access_log() -> None:
    """Install the redaction on uvicorn's access logger (idempotent)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, QueryStringRedaction) for existing in logger.filters):
        logger.addFilter(QueryStringRedaction())
