"""The schedule means what it means to cron(8)/crontab(5). Field meaning is checked
against an independent implementation (croniter); DST behaviour against Debian
cron(8)'s documented rules, since croniter (like APScheduler) fires a fixed-time job
twice in a fall-back hour and cron does not."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from omoi_os.schedule import CronSchedule, InvalidSchedule
from omoi_os.services.consolidation.decisions import due_tick
from omoi_os.services.consolidation.scheduler import CronScheduleTrigger

BERLIN = ZoneInfo("Europe/Berlin")
STARTS = [
    datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 2, 27, 23, 59, 30, tzinfo=UTC),
    datetime(2028, 2, 28, 12, 0, tzinfo=UTC),  # a leap year
    datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
]

EXPRESSIONS = [
    # plain values, lists, ranges, steps
    "0 2 * * *",
    "*/15 * * * *",
    "5,35 */6 * * *",
    "0-10/3 1-5 * * *",
    "59 23 31 12 *",
    "0 0 1 */3 *",
    "30 12 10-20/5 * *",
    # month names
    "0 0 1 jan,jul *",
    "0 6 * mar-may *",
    "0 0 * JAN-DEC/2 *",
    # every day-of-week form: numbers with 0 and 7 for Sunday, names, ranges, steps
    "0 9 * * 0",
    "0 9 * * 7",
    "0 9 * * sun",
    "0 9 * * SAT,SUN",
    "0 9 * * 1-5",
    "0 9 * * mon-fri",
    "0 9 * * 5-7",
    "0 9 * * */2",
    "0 9 * * 1-7/3",
    "0 9 * * 0,3,6",
    # day of month and day of week both restricted: either matches (crontab(5))
    "0 0 13 * 5",
    "0 0 1,15 * mon",
    # macros
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
]


def _croniter_ticks(expression: str, start: datetime, count: int) -> list[datetime]:
    iterator = croniter(expression, start)
    return [iterator.get_next(datetime).astimezone(UTC) for _ in range(count)]


def _our_ticks(schedule: CronSchedule, start: datetime, count: int) -> list[datetime]:
    ticks = schedule.ticks_after(start)
    return [next(ticks) for _ in range(count)]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_field_meaning_matches_croniter(expression: str) -> None:
    schedule = CronSchedule.parse(expression, "UTC")

    for start in STARTS:
        assert _our_ticks(schedule, start, 40) == _croniter_ticks(expression, start, 40), start


def test_sunday_is_zero_and_seven_unlike_apscheduler_from_crontab() -> None:
    # APScheduler 3 reads "0" as Monday; cron reads it as Sunday.
    sundays = {
        CronSchedule.parse(f"0 9 * * {dow}").next_tick(datetime(2026, 11, 26, tzinfo=UTC))
        for dow in ("0", "7", "sun")
    }

    assert sundays == {datetime(2026, 11, 29, 9, 0, tzinfo=UTC)}
    assert datetime(2026, 11, 29).strftime("%A") == "Sunday"


def test_restricted_day_of_month_and_week_are_ored() -> None:
    # Friday the 13th as cron reads it: every 13th, and every Friday.
    schedule = CronSchedule.parse("0 0 13 * 5")
    ticks = schedule.ticks_between(
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)
    )

    assert [tick.day for tick in ticks] == [6, 13, 20, 27]  # 13 Nov 2026 is a Friday too
    ticks = schedule.ticks_between(
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)
    )
    assert [tick.day for tick in ticks] == [4, 11, 13, 18, 25]


def test_spring_forward_runs_a_skipped_fixed_time_tick_once_at_the_jump() -> None:
    # Europe/Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 never exists.
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Berlin")

    ticks = schedule.ticks_between(
        datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)
    )

    assert [tick.astimezone(BERLIN).isoformat() for tick in ticks] == [
        "2026-03-27T02:30:00+01:00",
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # cron(8): "run soon after the change"
        "2026-03-30T02:30:00+02:00",
    ]


def test_fall_back_runs_a_fixed_time_tick_once() -> None:
    # 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Berlin")

    ticks = schedule.ticks_between(
        datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC)
    )

    assert [tick.isoformat() for tick in ticks] == [
        "2026-10-24T00:30:00+00:00",
        "2026-10-25T00:30:00+00:00",  # the first 02:30 (CEST) only
        "2026-10-26T01:30:00+00:00",
    ]
    # croniter, the reference for field meaning, would fire twice that night.
    assert _croniter_ticks_between("30 2 * * *", BERLIN, ticks[0], ticks[-1]) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]


def _croniter_ticks_between(
    expression: str, zone: ZoneInfo, start: datetime, end: datetime
) -> list[datetime]:
    iterator = croniter(expression, start.astimezone(zone))
    ticks = []
    while (tick := iterator.get_next(datetime).astimezone(UTC)) <= end:
        ticks.append(tick)
    return ticks


def test_wildcard_schedules_follow_the_wall_clock_through_dst() -> None:
    # cron(8): jobs with a wildcard in minute or hour run on the new wall time.
    hourly = CronSchedule.parse("0 * * * *", "Europe/Berlin")
    spring = hourly.ticks_between(
        datetime(2026, 3, 28, 23, 30, tzinfo=UTC), datetime(2026, 3, 29, 2, 30, tzinfo=UTC)
    )
    autumn = hourly.ticks_between(
        datetime(2026, 10, 24, 22, 30, tzinfo=UTC), datetime(2026, 10, 25, 2, 30, tzinfo=UTC)
    )

    assert [t.astimezone(BERLIN).strftime("%H:%M%z") for t in spring] == [
        "01:00+0100",
        "03:00+0200",
        "04:00+0200",
    ]
    assert [t.astimezone(BERLIN).strftime("%H:%M%z") for t in autumn] == [
        "01:00+0200",
        "02:00+0200",
        "02:00+0100",
        "03:00+0100",
    ]


def test_due_tick_coalesces_missed_ticks_into_the_latest() -> None:
    schedule = CronSchedule.parse("0 */6 * * *")
    # Three ticks (00:00, 06:00, 12:00) passed; the callback stands for the last.
    now = datetime(2026, 5, 1, 13, 59, tzinfo=UTC)

    assert due_tick(schedule, now) == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    # A callback that reads the clock a hair before its own tick still gets that tick.
    assert due_tick(schedule, datetime(2026, 5, 1, 17, 59, 59, 500_000, tzinfo=UTC)) == (
        datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize("expression", ["30 2 * * *", "*/20 * * * *", "0 9 * * 1-5", "0 0 13 * 5"])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York"])
def test_latest_tick_agrees_with_forward_iteration(expression: str, zone: str) -> None:
    schedule = CronSchedule.parse(expression, zone)
    rng = random.Random(7)
    instants = [datetime(2026, 3, 29, 0, 45, tzinfo=UTC), datetime(2026, 10, 25, 1, 15, tzinfo=UTC)]
    instants += [
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(365 * 86_400))
        for _ in range(20)
    ]

    for instant in instants:
        earlier = schedule.ticks_between(instant - timedelta(days=8), instant)
        assert schedule.latest_tick(instant) == earlier[-1], instant


def test_a_tick_instant_is_its_own_latest_tick() -> None:
    schedule = CronSchedule.parse("0 2 * * *")
    tick = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)

    assert schedule.latest_tick(tick) == tick
    assert schedule.next_tick(tick) == tick + timedelta(days=1)


def _trigger_at(shared_now: datetime) -> CronScheduleTrigger:
    """A trigger whose shared (database) clock stands at `shared_now`."""
    return CronScheduleTrigger(
        CronSchedule.parse("0 2 * * *", "Europe/Berlin"), clock=lambda: shared_now
    )


TICK = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)  # 02:00 CEST
NEXT_TICK = datetime(2026, 6, 2, 0, 0, tzinfo=UTC)


def test_scheduler_trigger_fires_on_the_schedules_ticks() -> None:
    before = TICK - timedelta(seconds=10)

    assert _trigger_at(before).get_next_fire_time(None, before) == TICK
    just_after = TICK + timedelta(milliseconds=5)
    assert _trigger_at(just_after).get_next_fire_time(TICK, just_after) == NEXT_TICK


@pytest.mark.parametrize("local_offset", [timedelta(seconds=-90), timedelta(seconds=90)])
def test_scheduler_trigger_waits_for_the_tick_by_the_shared_clock(
    local_offset: timedelta,
) -> None:
    """This machine's clock 90 s off the database's: the timer is set for the tick's
    instant by the database's clock, translated into this machine's."""
    shared_now = TICK - timedelta(minutes=5)
    local_now = shared_now + local_offset

    fire_at = _trigger_at(shared_now).get_next_fire_time(None, local_now)

    assert fire_at == TICK + local_offset


def test_scheduler_trigger_fired_early_waits_again_for_the_same_tick() -> None:
    early = TICK - timedelta(seconds=3)  # the clocks moved apart after the timer was set

    assert _trigger_at(early).get_next_fire_time(TICK, early) == TICK
    # A call a moment before the instant already stands for the tick (TICK_TOLERANCE).
    almost = TICK - timedelta(milliseconds=200)
    assert _trigger_at(almost).get_next_fire_time(TICK, almost) == NEXT_TICK


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("0 * * * * *", "has 6 fields"),
        ("60 * * * *", "bad minute field '60'"),
        ("0 24 * * *", "bad hour field '24'"),
        ("0 0 0 * *", "bad day of month field '0'"),
        ("0 0 * 13 *", "bad month field '13'"),
        ("0 0 * * 8", "bad day of week field '8'"),
        ("0 0 * * 7-1", "bad day of week field '7-1'"),
        ("5/15 * * * *", "bad minute field '5/15'"),
        ("*/0 * * * *", "bad minute field '*/0'"),
        ("0 0 L * *", "bad day of month field 'L'"),
        ("0 0 * * 1#2", "bad day of week field '1#2'"),
        ("0 0 * * mon-funday", "bad day of week field"),
        ("0 0 30 2 *", "bad day of month field '30'"),
        ("@reboot", "unknown macro"),
    ],
)
def test_invalid_schedules_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message.replace("*", r"\*")):
        CronSchedule.parse(expression)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        CronSchedule.parse("0 2 * * *").next_tick(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("expression", "zone", "gap"),
    [
        ("0 2 * * *", "UTC", timedelta(days=1)),
        ("*/15 * * * mon-fri", "UTC", timedelta(minutes=15)),
        ("0 9,17 * * *", "UTC", timedelta(hours=8)),
        ("0 0 1 1 *", "UTC", timedelta(days=365)),
        # Daily at 02:30 in Berlin: the spring-forward day runs it at 03:00, 23.5 h on.
        ("30 2 * * *", "Europe/Berlin", timedelta(hours=23, minutes=30)),
    ],
)
def test_shortest_gap_between_ticks(expression: str, zone: str, gap: timedelta) -> None:
    assert CronSchedule.parse(expression, zone).shortest_gap() == gap
