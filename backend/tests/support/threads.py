"""Which of the threads our code starts are alive now."""

from __future__ import annotations

import threading


def scheduler_threads() -> list[threading.Thread]:
    """APScheduler's live threads (they must all be gone after a stop)."""
    return [t for t in threading.enumerate() if t.name.startswith("APScheduler")]
