"""DatabaseClock: the database server's time, read now and then, run on monotonically."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from omoi_os.services.database import DatabaseService
from omoi_os.services.database_clock import DatabaseClock


class _Monotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_before_any_reading_it_tells_this_machines_time(db: DatabaseService) -> None:
    wall = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    clock = DatabaseClock(db, wall=lambda: wall)

    assert clock() == wall
    assert clock.skew is None
    assert not clock.skewed


@pytest.mark.parametrize("offset_seconds", [-90, 90])
def test_a_skewed_machine_tells_the_databases_time(
    postgres_url: str, offset_seconds: int, caplog: pytest.LogCaptureFixture
) -> None:
    """This machine's wall clock 90 s off: the clock tells the server's time anyway,
    and says once that the machine's is off."""
    offset = timedelta(seconds=offset_seconds)
    db = DatabaseService(postgres_url)
    try:
        clock = DatabaseClock(db, wall=lambda: datetime.now(UTC) + offset)
        with caplog.at_level(logging.WARNING, logger="omoi_os.services.database_clock"):
            clock.synchronize()
            clock.synchronize()
        server_now = _server_now(db)

        assert abs((clock() - server_now).total_seconds()) < 0.5
        assert clock.skew is not None
        assert abs(clock.skew.total_seconds() + offset_seconds) < 0.5
        assert clock.skewed
        warnings = [r for r in caplog.records if getattr(r, "action", None) == "clock_skewed"]
        assert len(warnings) == 1
        assert f"{offset_seconds:+.0f}" in warnings[0].getMessage()
    finally:
        db.dispose()


def test_between_readings_it_runs_on_the_monotonic_clock(postgres_url: str) -> None:
    """A step of the wall clock after the reading does not move the clock; elapsed
    monotonic time does."""
    db = DatabaseService(postgres_url)
    monotonic = _Monotonic()
    wall = [datetime.now(UTC)]
    try:
        clock = DatabaseClock(db, wall=lambda: wall[0], monotonic=monotonic)
        clock.synchronize()
        read = clock()

        wall[0] += timedelta(hours=1)  # the machine's clock jumps
        assert clock() == read
        monotonic.now += 30
        assert clock() == read + timedelta(seconds=30)
    finally:
        db.dispose()


def test_a_machine_back_in_step_is_said_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = DatabaseService(postgres_url)
    offset = [timedelta(seconds=30)]
    try:
        clock = DatabaseClock(db, wall=lambda: datetime.now(UTC) + offset[0])
        with caplog.at_level(logging.INFO, logger="omoi_os.services.database_clock"):
            clock.synchronize()
            offset[0] = timedelta(0)
            clock.synchronize()
            clock.synchronize()
        actions = [getattr(r, "action", None) for r in caplog.records]

        assert actions == ["clock_skewed", "clock_skew_cleared"]
        assert not clock.skewed
    finally:
        db.dispose()


def test_on_sqlite_the_databases_time_is_this_machines(tmp_path: object) -> None:
    """SQLite runs in this process: there is no other clock to read."""
    db = DatabaseService(f"sqlite:///{tmp_path}/clock.db")
    wall = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    try:
        clock = DatabaseClock(db, wall=lambda: wall)
        clock.synchronize()

        assert clock() == wall
        assert clock.skew is None
    finally:
        db.dispose()


def _server_now(db: DatabaseService) -> datetime:
    with db.single_statement(read_only=True) as connection:
        now = db.backend.read_clock(connection)
    assert now is not None
    return now
