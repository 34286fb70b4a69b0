"""InFlight and Wakeup (omoi_os/services/threads.py): counting callbacks so that a stop
can wait for them within a bound and cancel their statements, and waking idle threads
without losing a signal. No database; threads meet at Events and Barriers."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from omoi_os.services.threads import InFlight, Wakeup
from tests.support.polling import wait_for

WAIT = 20.0  # generous bound for "another thread gets there" on a busy machine


def _thread(target: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# --- fake DBAPI connections --------------------------------------------------------------


class _PsycopgLike:
    """A psycopg connection: `cancel_safe()` is what must be used, not `cancel()`."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def cancel_safe(self) -> None:
        self.calls.append("cancel_safe")

    def cancel(self) -> None:
        self.calls.append("cancel")


class _CancelOnly:
    """A DBAPI connection with `cancel()` only (an older psycopg)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def cancel(self) -> None:
        self.calls.append("cancel")


class _SqliteLike:
    """A sqlite3 connection: it is interrupted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def interrupt(self) -> None:
        self.calls.append("interrupt")


class _BlockedStatement:
    """A connection whose statement runs until it is cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1
        self.cancelled.set()

    def execute(self) -> None:
        if not self.cancelled.wait(WAIT):
            raise AssertionError("the statement was never cancelled")
        raise RuntimeError("canceling statement due to user request")


# --- InFlight: admitting and counting ---------------------------------------------------------


def test_enter_admits_and_counts_until_closed_and_open_readmits() -> None:
    in_flight = InFlight()

    with in_flight.enter() as admitted:
        assert admitted is True
        assert in_flight.running == 1
        with in_flight.enter() as nested:
            assert (nested, in_flight.running) == (True, 2)
    assert in_flight.running == 0

    in_flight.close()
    with in_flight.enter() as admitted:
        assert admitted is False
        assert in_flight.running == 0  # a turned-away callback is not counted
    assert in_flight.running == 0

    in_flight.open()
    with in_flight.enter() as admitted:
        assert (admitted, in_flight.running) == (True, 1)
    assert in_flight.running == 0


def test_a_callback_that_raises_is_still_uncounted() -> None:
    in_flight = InFlight()

    with pytest.raises(RuntimeError), in_flight.enter() as admitted:
        assert admitted is True
        raise RuntimeError("callback failed")

    assert in_flight.running == 0
    assert in_flight.wait_idle(0) is True


def test_closing_does_not_turn_away_callbacks_already_running() -> None:
    in_flight = InFlight()
    inside = threading.Event()
    finish = threading.Event()
    seen: list[bool] = []

    def callback() -> None:
        with in_flight.enter() as admitted:
            seen.append(admitted)
            inside.set()
            assert finish.wait(WAIT)

    thread = _thread(callback)
    assert inside.wait(WAIT)
    in_flight.close()
    assert in_flight.running == 1
    finish.set()
    thread.join(WAIT)

    assert not thread.is_alive()
    assert (seen, in_flight.running) == ([True], 0)


def test_running_counts_every_callback_inside() -> None:
    in_flight = InFlight()
    count = 5
    all_inside = threading.Barrier(count + 1)
    finish = threading.Event()

    def callback() -> None:
        with in_flight.enter() as admitted:
            assert admitted
            all_inside.wait(WAIT)
            assert finish.wait(WAIT)

    threads = [_thread(callback) for _ in range(count)]
    all_inside.wait(WAIT)  # every callback is inside enter()
    try:
        assert in_flight.running == count
    finally:
        finish.set()
        for thread in threads:
            thread.join(WAIT)

    assert in_flight.running == 0


def test_wait_idle_is_true_at_once_when_nothing_runs() -> None:
    in_flight = InFlight()

    began = time.monotonic()
    assert in_flight.wait_idle(WAIT) is True
    assert time.monotonic() - began < WAIT / 2  # did not wait out the timeout

    in_flight.close()  # closed and idle: still idle
    assert in_flight.wait_idle(0) is True


def test_wait_idle_is_bounded_while_a_callback_runs() -> None:
    in_flight = InFlight()
    inside = threading.Event()
    finish = threading.Event()

    def callback() -> None:
        with in_flight.enter():
            inside.set()
            assert finish.wait(WAIT)

    thread = _thread(callback)
    assert inside.wait(WAIT)
    try:
        began = time.monotonic()
        assert in_flight.wait_idle(0.2) is False
        waited = time.monotonic() - began
        assert 0.19 <= waited < WAIT / 2
    finally:
        finish.set()
        thread.join(WAIT)


def test_wait_idle_returns_true_once_the_last_callback_ends() -> None:
    in_flight = InFlight()
    inside = threading.Barrier(3)
    finish = [threading.Event(), threading.Event()]

    def callback(done: threading.Event) -> Callable[[], None]:
        def run() -> None:
            with in_flight.enter():
                inside.wait(WAIT)
                assert done.wait(WAIT)

        return run

    threads = [_thread(callback(done)) for done in finish]
    inside.wait(WAIT)
    in_flight.close()
    idle: list[bool] = []
    waiter = _thread(lambda: idle.append(in_flight.wait_idle(WAIT)))

    finish[0].set()
    threads[0].join(WAIT)
    assert in_flight.running == 1
    assert idle == []  # one callback still runs: the waiter still waits
    finish[1].set()
    waiter.join(WAIT)

    assert (idle, in_flight.running) == ([True], 0)
    assert not waiter.is_alive()


# --- InFlight: interrupting statements --------------------------------------------------------


def test_interrupt_all_cancels_every_registered_connection_once() -> None:
    in_flight = InFlight()
    psycopg_like, cancel_only, sqlite_like = _PsycopgLike(), _CancelOnly(), _SqliteLike()

    with (
        in_flight.interruptible(psycopg_like),
        in_flight.interruptible(cancel_only),
        in_flight.interruptible(sqlite_like),
    ):
        assert in_flight.interrupt_all() == 3

    assert psycopg_like.calls == ["cancel_safe"]  # never the blocking cancel()
    assert cancel_only.calls == ["cancel"]
    assert sqlite_like.calls == ["interrupt"]


def test_a_connection_is_interruptible_only_inside_its_block() -> None:
    in_flight = InFlight()
    connection = _CancelOnly()

    assert in_flight.interrupt_all() == 0
    with pytest.raises(RuntimeError), in_flight.interruptible(connection):
        raise RuntimeError("the statement failed on its own")
    assert in_flight.interrupt_all() == 0  # left the block: no longer registered

    assert connection.calls == []


def test_interrupt_all_ends_a_statement_blocked_in_another_thread() -> None:
    """What a bounded stop does: close, cancel what runs, wait for it to end."""
    in_flight = InFlight()
    connection = _BlockedStatement()
    registered = threading.Event()
    outcome: list[str] = []

    def callback() -> None:
        with in_flight.enter() as admitted, in_flight.interruptible(connection):
            assert admitted
            registered.set()
            try:
                connection.execute()
            except RuntimeError as exc:
                outcome.append(str(exc))

    thread = _thread(callback)
    assert registered.wait(WAIT)
    in_flight.close()
    assert in_flight.wait_idle(0) is False

    assert in_flight.interrupt_all() == 1
    assert in_flight.wait_idle(WAIT) is True

    thread.join(WAIT)
    assert connection.cancels == 1
    assert outcome == ["canceling statement due to user request"]
    assert in_flight.interrupt_all() == 0


def test_interrupt_all_interrupts_a_real_sqlite_statement() -> None:
    in_flight = InFlight()
    ready = threading.Event()
    shared: dict[str, Any] = {}
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )

    def callback() -> None:
        connection = sqlite3.connect(":memory:")
        try:
            with in_flight.enter(), in_flight.interruptible(connection):
                ready.set()
                try:
                    connection.execute(endless).fetchone()
                except sqlite3.OperationalError as exc:
                    shared["error"] = str(exc)
        finally:
            connection.close()

    thread = _thread(callback)
    assert ready.wait(WAIT)
    interrupted = []

    def interrupted_and_idle() -> bool:
        # An interrupt before the statement starts is lost: repeat until it ends.
        interrupted.append(in_flight.interrupt_all())
        return in_flight.wait_idle(0.05)

    wait_for(interrupted_and_idle, timeout=WAIT, what="the endless query to be interrupted")
    thread.join(WAIT)

    assert shared == {"error": "interrupted"}
    assert interrupted[0] == 1


# --- Wakeup ---------------------------------------------------------------------------------


def test_a_notify_while_busy_is_not_lost() -> None:
    wakeup = Wakeup()
    seen = wakeup.generation

    wakeup.notify()  # arrives while the waiter is still busy, before it waits

    began = time.monotonic()
    wakeup.wait(seen, WAIT)
    assert time.monotonic() - began < WAIT / 2
    assert wakeup.generation == seen + 1
    # A later wait from the new generation is not woken by the old signal.
    began = time.monotonic()
    wakeup.wait(wakeup.generation, 0.1)
    assert time.monotonic() - began >= 0.09  # its whole timeout


def test_notify_wakes_every_waiter() -> None:
    wakeup = Wakeup()
    count = 4
    seen = wakeup.generation
    about_to_wait = threading.Barrier(count + 1)
    woken: list[float] = []

    def waiter() -> None:
        about_to_wait.wait(WAIT)
        wakeup.wait(seen, WAIT * 3)
        woken.append(time.monotonic())

    threads = [_thread(waiter) for _ in range(count)]
    about_to_wait.wait(WAIT)  # each has read `seen`; waiting or about to: either counts
    notified = time.monotonic()
    wakeup.notify()
    for thread in threads:
        thread.join(WAIT)

    assert len(woken) == count
    assert all(at - notified < WAIT for at in woken)  # not the 60 s timeout


def test_wait_returns_after_its_timeout_without_a_notify() -> None:
    wakeup = Wakeup()

    began = time.monotonic()
    wakeup.wait(wakeup.generation, 0.2)
    waited = time.monotonic() - began

    assert 0.19 <= waited < WAIT / 2
    assert wakeup.generation == 0


def test_closing_wakes_a_blocked_waiter() -> None:
    wakeup = Wakeup()
    returned = threading.Event()

    def waiter() -> None:
        wakeup.wait(wakeup.generation, WAIT * 3)
        returned.set()

    thread = _thread(waiter)
    # Blocked inside the wait (a Condition lists the threads waiting on it).
    wait_for(lambda: len(wakeup._changed._waiters) == 1, what="the waiter to block")
    wakeup.close()

    assert returned.wait(5), "the waiter slept on after close()"
    thread.join(WAIT)


def test_closing_wakes_every_waiter_and_every_later_wait() -> None:
    """ConsolidationWorker.stop closes its Wakeup: no idle thread sleeps out its poll,
    including one that reads the generation after the close."""
    wakeup = Wakeup()
    count = 4
    about_to_wait = threading.Barrier(count + 1)
    returned = threading.Semaphore(0)

    def waiter() -> None:
        seen = wakeup.generation
        about_to_wait.wait(WAIT)
        wakeup.wait(seen, WAIT * 3)
        returned.release()

    threads = [_thread(waiter) for _ in range(count)]
    about_to_wait.wait(WAIT)
    wakeup.close()

    for _ in range(count):
        assert returned.acquire(timeout=WAIT)
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    began = time.monotonic()
    wakeup.wait(wakeup.generation, WAIT)
    assert time.monotonic() - began < WAIT / 2
