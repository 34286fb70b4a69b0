"""The access log's redaction, on uvicorn's own record shape."""

from __future__ import annotations

import logging

import pytest

from omoi_os.api.access_log import QueryStringRedaction, redacted_path


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/healthz", "/healthz"),
        ("/x?token=abc", "/x?token=***"),
        ("/x?token=abc&limit=5&flag", "/x?token=***&limit=***&flag=***"),
        ("/x?", "/x?=***"),
    ],
)
def test_every_query_value_is_masked_and_the_names_kept(path: str, shown: str) -> None:
    assert redacted_path(path) == shown


def test_the_filter_rewrites_uvicorns_access_line() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/api/v1/projects?api_key=SECRET", "1.1", 200),
        None,
    )

    assert QueryStringRedaction().filter(record) is True
    assert record.getMessage() == '127.0.0.1:5000 - "GET /api/v1/projects?api_key=*** HTTP/1.1" 200'
