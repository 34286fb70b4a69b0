"""Thread primitives for background work: counting callbacks so that a stop can wait
for them within a bound (InFlight), and waking idle threads without losing a signal
(Wakeup)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omoi_os.services.database import interrupt_statement


class InFlight:
    """Counts running callbacks; once closed, new ones are turned away until it is
    opened again."""

    def __init__(self) -> None:
        self._running = 0
        self._closed = False
        self._changed = threading.Condition()
        self._connections: set[Any] = set()

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

    @contextmanager
    def interruptible(self, dbapi_connection: Any) -> Iterator[None]:
        """While the block runs, interrupt_all() may cancel this connection's statement."""
        with self._changed:
            self._connections.add(dbapi_connection)
        try:
            yield
        finally:
            with self._changed:
                self._connections.discard(dbapi_connection)

    def interrupt_all(self) -> int:
        """Cancel the statements of every interruptible block now running; their
        transactions then roll back. Returns how many were interrupted."""
        with self._changed:
            connections = list(self._connections)
        for connection in connections:
            interrupt_statement(connection)
        return len(connections)

    def open(self) -> None:
        with self._changed:
            self._closed = False

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


class Wakeup:
    """Wakes waiting threads without losing a wake-up: a waiter says which generation
    it last saw, so a notify that came while it was busy still counts, and nothing
    ever has to be cleared (clearing an Event can swallow another thread's signal).
    Once closed, every wait returns at once."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0
        self._closed = False

    @property
    def generation(self) -> int:
        with self._changed:
            return self._generation

    def notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def close(self) -> None:
        """Wake every waiter now and every later one at once (the threads are stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Return after `timeout`, or at once if notified since generation `seen`, or
        once closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen or self._closed, timeout)
