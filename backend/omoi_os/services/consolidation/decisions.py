"""The trigger decisions as plain functions of explicit inputs: no database, no clock.

The service gathers the inputs (one query), asks these functions, and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from omoi_os.models import JobStatus
from omoi_os.schedule import CronSchedule

# A scheduler callback may run a moment before the clock it reads says the tick
# has come; ticks are at least a minute apart, so a second of slack is unambiguous.
TICK_TOLERANCE = timedelta(seconds=1)
# A tick's own timer may call a little late; within this a tick is on time, whatever
# the misfire grace (which is about ticks missed while nothing ran).
ON_TIME = timedelta(seconds=10)


class TriggerOutcome(StrEnum):
    """What a trigger decided (also the `outcome` label of the trigger metric)."""

    CREATED = "created"
    SKIPPED_ACTIVE = "skipped_active"
    SKIPPED_IDLE = "skipped_idle"  # a scheduled tick: nothing to do for the project
    SKIPPED_COOLDOWN = "skipped_cooldown"
    SKIPPED_BELOW_THRESHOLD = "skipped_below_threshold"
    SKIPPED_INACTIVE = "skipped_inactive"
    SKIPPED_PAUSED = "skipped_paused"  # the project is paused (a crossing is dropped)
    SKIPPED_RECORDED = "skipped_recorded"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ThresholdProbe:
    """What the threshold check knows about a project, read in one query."""

    project_active: bool
    cooldown_from: datetime | None  # when the last job that counts for the cooldown ended
    crossing_deferred: bool  # a crossing already waits for the job or the cooldown
    active_job_id: int | None
    unconsolidated: int  # counted up to the threshold, never further
    project_paused: bool = False


def threshold_crossed(unconsolidated: int, threshold: int) -> bool:
    return unconsolidated >= threshold


def cooldown_over(cooldown_from: datetime | None, now: datetime, cooldown: timedelta) -> bool:
    return cooldown_from is None or now - cooldown_from >= cooldown


def decide_threshold(
    probe: ThresholdProbe, *, threshold: int, cooldown: timedelta, now: datetime
) -> TriggerOutcome:
    """Should this memory write start a consolidation job?"""
    # The deferred pass applies the same rule in SQL (triggers/threshold.py,
    # fire_deferred); test_threshold.py runs one table of cases through both.
    if not probe.project_active:
        return TriggerOutcome.SKIPPED_INACTIVE
    if probe.project_paused:
        return TriggerOutcome.SKIPPED_PAUSED
    if not threshold_crossed(probe.unconsolidated, threshold):
        return TriggerOutcome.SKIPPED_BELOW_THRESHOLD
    if probe.active_job_id is not None:
        return TriggerOutcome.SKIPPED_ACTIVE
    if not cooldown_over(probe.cooldown_from, now, cooldown):
        return TriggerOutcome.SKIPPED_COOLDOWN
    return TriggerOutcome.CREATED


def defer_crossing(probe: ThresholdProbe, outcome: TriggerOutcome) -> bool:
    """Should the check remember this crossing, to fire it once the active job or the
    cooldown is over? (Only the first such crossing is remembered; a paused project's
    is dropped, so that resuming it starts nothing by itself.)"""
    waiting = outcome in (TriggerOutcome.SKIPPED_ACTIVE, TriggerOutcome.SKIPPED_COOLDOWN)
    return waiting and not probe.crossing_deferred


def starts_cooldown(status: JobStatus, memories_consolidated: int) -> bool:
    """Does a job that ended so start its project's cooldown? One that consolidated
    something does, and so does a failure (it damps retry storms); a completed or
    cancelled job that consolidated nothing (a dry run, a scope that matched nothing,
    a no-op) does not."""
    if status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
        return True
    return status is JobStatus.COMPLETED and memories_consolidated > 0


def due_tick(schedule: CronSchedule, now: datetime) -> datetime | None:
    """The tick a scheduler callback running at `now` stands for: the latest one.
    Ticks missed in between coalesce into it."""
    return schedule.latest_tick(now + TICK_TOLERANCE)


def next_timer_tick(schedule: CronSchedule, now: datetime) -> datetime | None:
    """The tick a timer set at `now` waits for: the first one not yet due (due_tick).
    A timer that fired early is set again for the same tick."""
    return schedule.next_tick(now + TICK_TOLERANCE)


class CatchUp(StrEnum):
    RUN = "run"  # the latest tick has not run and is recent enough: run it once now
    TOO_OLD = "too_old"  # missed, and older than the grace: skip it (and say so)
    NOT_NEEDED = "not_needed"  # no tick yet, or the latest one was recorded


def decide_catch_up(
    latest_tick: datetime | None, recorded: bool, now: datetime, grace: timedelta
) -> CatchUp:
    """What to do about the latest tick, on its own time or after it may have passed
    while no replica ran. Only the latest tick is considered, so missed ticks coalesce."""
    if latest_tick is None or recorded:
        return CatchUp.NOT_NEEDED
    if now - latest_tick <= max(grace, ON_TIME):
        return CatchUp.RUN
    return CatchUp.TOO_OLD
