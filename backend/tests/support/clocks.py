"""A hand-written clock for tests: time moves only when the test says so."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now
