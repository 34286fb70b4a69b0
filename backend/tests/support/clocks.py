"""A hand-written clock for tests: time moves only when the test says so."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


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


def quiet_schedule(now: datetime | None = None) -> str:
    """A daily cron schedule whose ticks are 12 hours away on either side of `now`.

    The default schedule (02:00 UTC) would make a test started between 02:00 and 03:00
    catch a real tick up (the misfire grace is an hour) and create jobs the test never
    asked for. Tests that want ticks set a schedule of their own."""
    at = (now or datetime.now(UTC)) + timedelta(hours=12)
    return f"{at.minute} {at.hour} * * *"
