"""The SQL of `consolidation_ticks`: the record of each cron tick's run.

A tick's instant is its primary key, so exactly one run of a tick writes its jobs,
however many replicas race for it (invariant 2, docs/invariants.md).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from omoi_os.models import ConsolidationTick, SchedulePause
from omoi_os.models.base import cast_table
from omoi_os.store.sql import insert_ignoring_conflicts

_ticks = cast_table(ConsolidationTick)


class TickClaim(Enum):
    """What claiming a tick found."""

    RUN = "run"  # this run recorded the tick: it writes the jobs
    SCHEDULE_PAUSED = "schedule_paused"  # recorded, passed over: the schedule is paused
    ALREADY_RECORDED = "already_recorded"  # another run recorded it before


def record_tick(
    session: Session, tick: datetime, *, now: datetime, caught_up: bool = False
) -> TickClaim:
    """Claim `tick` for this run. A concurrent run's uncommitted claim makes this wait
    for its outcome (PostgreSQL), so exactly one run of a tick writes its jobs. The
    schedule's pause is read by the same statement that records the tick, so a tick
    is either run or recorded as passed over, never both and never neither."""
    paused = select(SchedulePause.id).exists()
    statement = (
        insert_ignoring_conflicts(ConsolidationTick)
        .values(
            scheduled_for=tick,
            fired_at=now,
            jobs_created=0,
            schedule_paused=paused,
            caught_up=caught_up,
        )
        .returning(_ticks.c.schedule_paused)
    )
    schedule_paused = session.execute(statement).scalar_one_or_none()
    if schedule_paused is None:
        return TickClaim.ALREADY_RECORDED
    return TickClaim.SCHEDULE_PAUSED if schedule_paused else TickClaim.RUN


def set_tick_outcome(
    session: Session,
    tick: datetime,
    *,
    created: int,
    skipped_active: int,
    skipped_idle: int,
    skipped_paused: int,
) -> None:
    """What the run of `tick` did: jobs created, and active projects passed over."""
    session.execute(
        update(_ticks)
        .where(_ticks.c.scheduled_for == tick)
        .values(
            jobs_created=created,
            skipped_active=skipped_active,
            skipped_idle=skipped_idle,
            skipped_paused=skipped_paused,
        )
    )


def list_ticks(session: Session, *, limit: int, offset: int) -> list[ConsolidationTick]:
    """Recorded ticks, newest first (read from the primary key)."""
    statement = (
        select(ConsolidationTick)
        .order_by(ConsolidationTick.scheduled_for.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(statement))


def tick_recorded(session: Session, tick: datetime) -> bool:
    """Did a run of `tick` commit (here or on another replica)?"""
    return bool(session.scalar(select(exists().where(ConsolidationTick.scheduled_for == tick))))
