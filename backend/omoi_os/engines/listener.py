"""QueueListener: wakes workers the moment a task is queued, on PostgreSQL (LISTEN)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "omoi_task_queue"


class QueueListener:
    """A thread that LISTENs on NOTIFY_CHANNEL over its own connection and calls
    `on_notify` for each notification. It reconnects after a connection loss; workers
    still poll meanwhile, so a lost notification only costs latency."""

    RECONNECT_DELAY_S = 1.0
    CHECK_INTERVAL_S = 0.5

    def __init__(self, database_url: str, on_notify: Callable[[], None]) -> None:
        self._conninfo = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._on_notify = on_notify
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-queue-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        """True once the LISTEN is in place (tests use it to avoid a race)."""
        return self._listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                self._listening.clear()
                logger.warning("queue listener lost its connection (%s); reconnecting", exc)
                self._stopping.wait(self.RECONNECT_DELAY_S)

    def _listen(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._listening.set()
            while not self._stopping.is_set():
                for _ in conn.notifies(timeout=self.CHECK_INTERVAL_S):
                    self._on_notify()
