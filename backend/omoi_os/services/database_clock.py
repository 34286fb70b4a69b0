"""DatabaseClock: the database's time, the one clock every replica shares.

Leases, time-outs, when a queued task becomes claimable, the cooldown and whether a
tick is due are written by one replica and read by another. Each replica's own clock
may be off by minutes (a VM resumed, NTP not yet converged), and a lease judged on
two clocks 90 s apart expires while its worker is healthy. PostgreSQL's clock is the
one they all share, so every such decision is taken on it.

Asking the server on every decision would cost a round trip each. Instead the clock
reads the server's time now and then (at start and on each periodic pass, keeping
the reading with the shortest round trip, as NTP does) and runs on from there on this
process's monotonic clock, which a step of the wall clock does not move. Between two
readings it drifts by what a quartz drifts in half a minute: microseconds.

SQLite runs in this process: its time is this machine's, and the clock is the wall
clock. Tests inject a fake `Clock` instead, and it drives the same decisions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from omoi_os.clock import Clock, utc_now
from omoi_os.services.database import DatabaseService

logger = logging.getLogger(__name__)

# A replica this far from the database's time says so (its decisions are unaffected).
SKEW_WARNING = timedelta(seconds=5)
SAMPLES_PER_READING = 3


@dataclass(frozen=True)
class _Reading:
    database_time: datetime  # the server's time at the midpoint of the round trip
    monotonic: float  # this process's monotonic clock at that midpoint
    skew: timedelta  # the server's time minus this machine's wall clock
    round_trip: float


class DatabaseClock:
    """A `Clock` telling the database server's time (call `synchronize` to read it)."""

    def __init__(
        self,
        db: DatabaseService,
        *,
        wall: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._wall = wall
        self._monotonic = monotonic
        self._reading: _Reading | None = None
        self._warned = False

    def __call__(self) -> datetime:
        """The database's time now (this machine's until the first reading)."""
        reading = self._reading
        if reading is None:
            return self._wall()
        elapsed = timedelta(seconds=self._monotonic() - reading.monotonic)
        return reading.database_time + elapsed

    @property
    def skew(self) -> timedelta | None:
        """The database's time minus this machine's, at the last reading (None before
        one, or where the database's clock is this machine's)."""
        reading = self._reading
        return None if reading is None else reading.skew

    @property
    def skewed(self) -> bool:
        """This machine's clock was more than SKEW_WARNING off the database's."""
        skew = self.skew
        return skew is not None and abs(skew) > SKEW_WARNING

    def synchronize(self) -> None:
        """Read the database's time (raises if the database does not answer; the last
        reading is kept then). On SQLite there is nothing to read."""
        first = self._sample()
        if first is None:
            return
        readings = [first, *(self._sample() for _ in range(SAMPLES_PER_READING - 1))]
        # One reference replaced whole: readers on other threads see the old or the new.
        self._reading = min(
            (reading for reading in readings if reading is not None),
            key=lambda reading: reading.round_trip,
        )
        self._report_skew()

    def _sample(self) -> _Reading | None:
        with self._db.single_statement(read_only=True) as connection:
            sent, wall_sent = self._monotonic(), self._wall()
            server = self._db.backend.read_clock(connection)
            received = self._monotonic()
        if server is None:
            return None
        half = (received - sent) / 2
        midpoint_wall = wall_sent + timedelta(seconds=half)
        return _Reading(
            database_time=server.astimezone(UTC),
            monotonic=sent + half,
            skew=server - midpoint_wall,
            round_trip=received - sent,
        )

    def _report_skew(self) -> None:
        """One warning when this machine's clock drifts off, one line when it is back."""
        skew = self.skew
        if skew is None:
            return
        seconds = skew.total_seconds()
        if self.skewed and not self._warned:
            self._warned = True
            logger.warning(
                "this machine's clock is %+.1f s off the database's; leases, time-outs and "
                "ticks follow the database's clock",
                -seconds,
                extra={"action": "clock_skewed", "skew_seconds": round(seconds, 3)},
            )
        elif not self.skewed and self._warned:
            self._warned = False
            logger.info(
                "this machine's clock is back within %s of the database's",
                SKEW_WARNING,
                extra={"action": "clock_skew_cleared", "skew_seconds": round(seconds, 3)},
            )
