"""ScheduleService on both databases: pausing the schedule (one row, idempotent),
resuming it, and the ticks' history, newest first."""

from __future__ import annotations

from datetime import timedelta

import pytest

from omoi_os.models import SchedulePause
from omoi_os.services.consolidation.schedule_service import ScheduleService
from omoi_os.services.database import DatabaseService
from omoi_os.store import ticks as tick_store
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories


@pytest.fixture
def schedule(db: DatabaseService, clock: FakeClock) -> ScheduleService:
    return ScheduleService(db, clock=clock)


def test_pause_is_one_row_kept_until_resumed(
    schedule: ScheduleService, factories: Factories, clock: FakeClock
) -> None:
    assert schedule.current_pause_sync() is None

    first = schedule.pause_sync(by="alice", reason="database upgrade")
    clock.advance(timedelta(minutes=5))
    again = schedule.pause_sync(by="bob")  # idempotent: the pause in force, unchanged

    for pause in (first, again, schedule.current_pause_sync()):
        assert pause is not None
        assert (pause.paused_at, pause.paused_by, pause.reason) == (T0, "alice", "database upgrade")
    assert factories.count(SchedulePause) == 1
    schedule.resume_sync()
    schedule.resume_sync()  # resuming a running schedule is harmless
    assert schedule.current_pause_sync() is None
    assert factories.count(SchedulePause) == 0


def test_a_reason_over_500_characters_writes_nothing(
    schedule: ScheduleService, factories: Factories
) -> None:
    with pytest.raises(ValueError, match="reason is longer than 500 characters"):
        schedule.pause_sync(by="alice", reason="x" * 501)

    assert factories.count(SchedulePause) == 0


def test_ticks_newest_first_in_pages(db: DatabaseService, schedule: ScheduleService) -> None:
    ticks = [T0 + timedelta(hours=hour) for hour in range(5)]
    with db.transaction() as session:
        for tick in ticks:
            tick_store.record_tick(session, tick, now=tick)

    first = schedule.ticks_sync(limit=2)
    last = schedule.ticks_sync(limit=2, offset=4)

    assert [tick.scheduled_for for tick in first.items] == [ticks[4], ticks[3]]
    assert (first.limit, first.offset, first.next_offset) == (2, 0, 2)
    assert [tick.scheduled_for for tick in last.items] == [ticks[0]]
    assert last.next_offset is None
