"""The schedule as operators handle it: pausing and resuming it, and its ticks' history.

The pause is a row in the database, so every replica obeys it at once and it survives
restarts; each tick's run reads it in the statement that records the tick
(triggers/tick.py), so a tick that falls due while paused is recorded as passed over
and never caught up later.
"""

from __future__ import annotations

import logging

from omoi_os.clock import Clock, utc_now
from omoi_os.models import ConsolidationTick, SchedulePause
from omoi_os.services.awaitable import awaitable
from omoi_os.services.database import DatabaseService
from omoi_os.services.paging import Page
from omoi_os.services.projects import MAX_PAUSE_REASON
from omoi_os.store import schedule_pause as pause_store
from omoi_os.store import ticks as tick_store

logger = logging.getLogger(__name__)


class ScheduleService:
    """The schedule as operators handle it: pause, resume, the pause in force, and the
    recorded ticks. Every method is awaitable; its synchronous twin ends in `_sync`."""

    def __init__(self, db: DatabaseService, *, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    def pause_sync(self, *, by: str, reason: str | None = None) -> SchedulePause:
        """Pause the schedule; returns the pause. Pausing a paused schedule changes
        nothing and returns the pause in force (idempotent)."""
        if reason is not None and len(reason) > MAX_PAUSE_REASON:
            raise ValueError(f"reason is longer than {MAX_PAUSE_REASON} characters")
        with self._db.transaction() as session:
            pause_store.insert_pause(session, at=self._clock(), by=by, reason=reason)
            pause = pause_store.get_pause(session)
        assert pause is not None  # inserted, or there already
        logger.info(
            "consolidation schedule paused by %s (%s)",
            pause.paused_by,
            pause.reason,
            extra={"action": "schedule_paused", "paused_by": pause.paused_by},
        )
        return pause

    def resume_sync(self) -> None:
        """Resume the schedule (idempotent). Ticks passed over while paused stay so."""
        with self._db.transaction() as session:
            pause_store.delete_pause(session)
        logger.info("consolidation schedule resumed", extra={"action": "schedule_resumed"})

    def current_pause_sync(self) -> SchedulePause | None:
        """The pause in force, or None while the schedule runs."""
        with self._db.read() as session:
            return pause_store.get_pause(session)

    def ticks_sync(self, *, limit: int = 50, offset: int = 0) -> Page[ConsolidationTick]:
        """The recorded ticks, newest first."""
        with self._db.read() as session:
            rows = tick_store.list_ticks(session, limit=limit + 1, offset=offset)
        return Page.cut(rows, limit=limit, offset=offset)

    pause = awaitable(pause_sync)
    resume = awaitable(resume_sync)
    current_pause = awaitable(current_pause_sync)
    ticks = awaitable(ticks_sync)
