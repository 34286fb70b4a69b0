"""The consolidation schedule: a crontab(5) expression read in a time zone.

Pure time arithmetic, no clock and no I/O, so cron, DST and misfire behaviour can be
tested without sleeping. cronsim does the reading because it follows Debian's
cron(8) to the letter, where APScheduler 3's ``CronTrigger.from_crontab`` does not:
APScheduler numbers weekdays from Monday (crontab: 0 and 7 are Sunday), ANDs the
day-of-month and day-of-week fields (crontab: OR when both are restricted), and, like
croniter, fires a fixed-time job twice in the repeated hour of a DST fall-back.

What this module adds is the boundary: exactly five fields (or a crontab macro), the
plain crontab(5) grammar (no seconds field, no ``L``/``W``/``#`` extensions), and
ticks as UTC instants, because the tick instant is the key that makes a scheduled
job unique across replicas.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")

# crontab(5) macros; @reboot has no meaning for a schedule of ticks.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_NUMBER = r"\d{1,2}"
_NAMES = {
    "month": r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec",
    "day of week": r"sun|mon|tue|wed|thu|fri|sat",
}

# How far back latest_tick looks: a window doubling from two hours to beyond
# eight years (a 29 February that is also a given weekday can be that far back).
_FIRST_LOOKBACK = timedelta(hours=2)
_LOOKBACK_HORIZON = timedelta(days=8 * 366)

# How much of a schedule shortest_gap looks at: enough ticks to see every pattern of a
# minute-level schedule, a year of days to see a daily one cross both DST changes.
_GAP_SAMPLE_TICKS = 2_000
_GAP_SAMPLE_SPAN = timedelta(days=400)
_GAP_SAMPLE_START = datetime(2001, 1, 1, tzinfo=UTC)


class InvalidSchedule(ValueError):
    """A schedule that crontab(5) would not accept, or that never fires."""


def _field_pattern(field_name: str) -> re.Pattern[str]:
    """crontab(5) grammar of one field: lists of `*`, values and ranges, with steps.

    A step needs a `*` or a range before it (Debian cron rejects `5/15`).
    """
    value = _NUMBER if field_name not in _NAMES else f"(?:{_NUMBER}|{_NAMES[field_name]})"
    item = rf"(?:\*(?:/\d+)?|{value}-{value}(?:/\d+)?|{value})"
    return re.compile(rf"{item}(?:,{item})*", re.IGNORECASE)


_FIELD_PATTERNS = {name: _field_pattern(name) for name in FIELD_NAMES}


@cache
def iana_zone_names() -> frozenset[str]:
    """The zone names of the IANA database (from tzdata's own list): not the files a
    system keeps beside them (`localtime`, `posixrules`), nor the `Factory` placeholder."""
    names = files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(names) - {"Factory"}


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA time zone called `name` (surrounding blanks ignored, as the schedule's
    are), or InvalidSchedule naming it."""
    key = name.strip()
    if key not in iana_zone_names():
        raise InvalidSchedule(f"unknown time zone {name!r} (expected an IANA name)")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"unknown time zone {name!r} (expected an IANA name)") from exc


def normalise_expression(expression: str) -> str:
    """The five-field form of `expression`, or InvalidSchedule saying what is wrong."""
    text = " ".join(expression.split())
    text = MACROS.get(text.lower(), text)
    if text.startswith("@"):
        raise InvalidSchedule(f"{expression!r}: unknown macro (known: {', '.join(MACROS)})")
    fields = text.split(" ")
    if len(fields) != len(FIELD_NAMES):
        raise InvalidSchedule(
            f"{expression!r} has {len(fields)} fields; a crontab schedule has 5 "
            "(minute hour day-of-month month day-of-week)"
        )
    for name, field in zip(FIELD_NAMES, fields, strict=True):
        if not _FIELD_PATTERNS[name].fullmatch(field):
            raise InvalidSchedule(f"{expression!r}: bad {name} field {field!r}")
    return text


@dataclass(frozen=True)
class CronSchedule:
    """A crontab(5) schedule in a time zone; its ticks are returned as UTC instants."""

    expression: str
    timezone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str | ZoneInfo = "UTC") -> CronSchedule:
        """Validate `expression` (and the zone) and return the schedule."""
        zone = timezone if isinstance(timezone, ZoneInfo) else parse_timezone(timezone)
        schedule = cls(normalise_expression(expression), zone)
        try:
            first = schedule.next_tick(datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise InvalidSchedule(f"{expression!r}: {_describe(exc, schedule.expression)}") from exc
        if first is None:
            raise InvalidSchedule(f"{expression!r} never fires")
        return schedule

    def ticks_after(self, after: datetime) -> Iterator[datetime]:
        """Every tick strictly after `after`, in order, as UTC instants."""
        after_utc = _as_utc(after)
        for local_tick in CronSim(self.expression, after_utc.astimezone(self.timezone)):
            tick = local_tick.astimezone(UTC)
            # Inside a repeated (fall-back) hour cronsim may answer with the first
            # occurrence of a wall time although `after` is in the second one.
            if tick > after_utc:
                yield tick

    def next_tick(self, after: datetime) -> datetime | None:
        """The first tick strictly after `after`, or None if there is none in years."""
        return next(self.ticks_after(after), None)

    def ticks_between(self, start: datetime, end: datetime) -> list[datetime]:
        """The ticks t with start < t <= end."""
        end_utc = _as_utc(end)
        ticks = []
        for tick in self.ticks_after(start):
            if tick > end_utc:
                break
            ticks.append(tick)
        return ticks

    def latest_tick(self, at_or_before: datetime) -> datetime | None:
        """The last tick at or before `at_or_before`, or None if there is none in years.

        Found by iterating forward over a window that doubles until it holds a tick:
        reverse iteration does not see a DST fall-back hour the way forward iteration
        (and cron) does, and the two must agree on which instants are ticks."""
        limit = _as_utc(at_or_before)
        window = _FIRST_LOOKBACK
        while window <= _LOOKBACK_HORIZON:
            ticks = self.ticks_between(limit - window, limit)
            if ticks:
                return ticks[-1]
            window *= 2
        return None

    def shortest_gap(self) -> timedelta:
        """The shortest time between two consecutive ticks, over a year of ticks (or
        the first 2,000): a tick's spread must end before the next tick."""
        return _shortest_gap(self)

    def __str__(self) -> str:
        return f"{self.expression} ({self.timezone.key})"


@cache
def _shortest_gap(schedule: CronSchedule) -> timedelta:
    end = _GAP_SAMPLE_START + _GAP_SAMPLE_SPAN
    shortest, previous = _GAP_SAMPLE_SPAN, None
    for count, tick in enumerate(schedule.ticks_after(_GAP_SAMPLE_START)):
        if previous is not None:
            shortest = min(shortest, tick - previous)
        if count >= _GAP_SAMPLE_TICKS or tick > end:
            break
        previous = tick
    return shortest


def spread_offset(project_id: uuid.UUID, spread: timedelta) -> timedelta:
    """Where in a tick's spread window a project's job becomes claimable: a hash of the
    project id, so it is the same on every replica and every night (like Jenkins' H),
    and projects fall evenly over the window. Millisecond resolution."""
    window_ms = int(spread.total_seconds() * 1000)
    if window_ms <= 0:
        return timedelta(0)
    digest = hashlib.blake2b(project_id.bytes, digest_size=8).digest()
    return timedelta(milliseconds=int.from_bytes(digest, "big") % window_ms)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: an aware datetime is required")
    return moment.astimezone(UTC)


def _describe(exc: CronSimError, expression: str) -> str:
    """cronsim says "Bad minute"; name the field and the text that is out of range."""
    reported = str(exc).removeprefix("Bad ").replace("-", " ")
    for name, field in zip(FIELD_NAMES, expression.split(" "), strict=True):
        if name == reported:
            return f"bad {name} field {field!r} (a value out of range, or a date that never occurs)"
    return str(exc) or "not a valid crontab schedule"
