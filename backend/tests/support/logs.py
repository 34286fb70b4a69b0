"""Reading the structured log records our code writes (each has an `action` field)."""

from __future__ import annotations

import logging

import pytest


def records(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    """The captured records whose `action` is `action`, in order."""
    return [record for record in caplog.records if getattr(record, "action", None) == action]


def one(caplog: pytest.LogCaptureFixture, action: str) -> logging.LogRecord:
    """The one captured record with this `action` (AssertionError if not exactly one)."""
    found = records(caplog, action)
    assert len(found) == 1, f"{len(found)} records with action {action!r}: {caplog.text}"
    return found[0]
