"""A hand-written schedule for tests of the scheduler's tick timer.

APScheduler keeps the timer's time on the wall clock, and crontab cannot tick sooner
than the next minute; this schedule ticks a moment after the scheduler starts, so a
test sees the timer fire without waiting for a minute to turn. It answers what
ConsolidationScheduler asks of a schedule (`next_tick`, `str`) and nothing more."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

SOON = timedelta(milliseconds=50)


class SoonSchedule:
    """`count` ticks (None: no end), `every` apart, the first `delay` after the first
    question: the scheduler asks when it starts, so the timer fires that long after
    start() whenever the test calls it."""

    def __init__(
        self,
        *,
        every: timedelta = SOON,
        count: int | None = 1,
        delay: timedelta = SOON,
    ) -> None:
        self._every = every
        self._count = count
        self._delay = delay
        self._first: datetime | None = None
        self._lock = threading.Lock()

    def next_tick(self, after: datetime) -> datetime | None:
        """The first tick strictly after `after`, or None once the ticks ran out."""
        with self._lock:
            if self._first is None:
                self._first = after + self._delay
            first = self._first
        if after < first:
            return first
        index = (after - first) // self._every + 1
        if self._count is not None and index >= self._count:
            return None
        return first + index * self._every

    def __str__(self) -> str:
        count = "no end" if self._count is None else str(self._count)
        return f"test ticks every {self._every} ({count})"
