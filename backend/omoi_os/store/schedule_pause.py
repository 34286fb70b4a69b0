"""The SQL of `consolidation_schedule_pause`: the schedule's one pause row."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from omoi_os.models import SchedulePause
from omoi_os.store.sql import insert_ignoring_conflicts

_SINGLE_ROW = 1


def insert_pause(session: Session, *, at: datetime, by: str, reason: str | None) -> None:
    """Pause the schedule, unless it is paused already (that pause is kept)."""
    statement = insert_ignoring_conflicts(SchedulePause).values(
        id=_SINGLE_ROW, paused_at=at, paused_by=by, reason=reason
    )
    session.execute(statement)


def delete_pause(session: Session) -> None:
    """Resume the schedule (nothing happens if it is not paused)."""
    session.execute(delete(SchedulePause))


def get_pause(session: Session) -> SchedulePause | None:
    """The schedule's pause, or None while it runs."""
    return session.scalar(select(SchedulePause))
