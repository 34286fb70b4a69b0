"""Bookkeeping for background callbacks, so that stopping can wait for them within a bound."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InFlight:
    """Counts running callbacks; once closed, new ones are turned away."""

    def __init__(self) -> None:
        self._running = 0
        self._closed = False
        self._changed = threading.Condition()

    @contextmanager
    def enter(self) -> Iterator[bool]:
        """Yields False (and counts nothing) if closed; the callback should then return."""
        with self._changed:
            if self._closed:
                admitted = False
            else:
                admitted = True
                self._running += 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs; False if `timeout` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout)

    @property
    def running(self) -> int:
        with self._changed:
            return self._running
