"""The trigger decisions as pure functions: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from omoi_os.models import MemoryType
from omoi_os.services.consolidation.decisions import (
    ON_TIME,
    CatchUp,
    ThresholdProbe,
    TriggerOutcome,
    cooldown_over,
    decide_catch_up,
    decide_threshold,
    defer_crossing,
    threshold_crossed,
)
from omoi_os.services.consolidation.scope import ConsolidationScope, parse_scope

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
COOLDOWN = timedelta(minutes=5)


def probe(**overrides: object) -> ThresholdProbe:
    values: dict[str, object] = {
        "project_active": True,
        "cooldown_from": None,
        "crossing_deferred": False,
        "active_job_id": None,
        "unconsolidated": 100,
    }
    return ThresholdProbe(**(values | overrides))  # type: ignore[arg-type]


def test_threshold_crossed_at_exactly_the_threshold() -> None:
    assert threshold_crossed(99, 100) is False
    assert threshold_crossed(100, 100) is True


def test_cooldown_is_over_at_exactly_its_end() -> None:
    assert cooldown_over(None, NOW, COOLDOWN) is True
    assert cooldown_over(NOW - COOLDOWN + timedelta(microseconds=1), NOW, COOLDOWN) is False
    assert cooldown_over(NOW - COOLDOWN, NOW, COOLDOWN) is True
    assert cooldown_over(NOW, NOW, timedelta(0)) is True


@pytest.mark.parametrize(
    ("overrides", "outcome"),
    [
        ({}, TriggerOutcome.CREATED),
        ({"unconsolidated": 99}, TriggerOutcome.SKIPPED_BELOW_THRESHOLD),
        ({"active_job_id": 7}, TriggerOutcome.SKIPPED_ACTIVE),
        ({"project_active": False}, TriggerOutcome.SKIPPED_INACTIVE),
        ({"cooldown_from": NOW - timedelta(minutes=1)}, TriggerOutcome.SKIPPED_COOLDOWN),
        ({"cooldown_from": NOW - timedelta(minutes=5)}, TriggerOutcome.CREATED),
        # An active job wins over the cooldown; inactivity over everything; below the
        # threshold, nothing waits (nothing is deferred).
        ({"active_job_id": 7, "cooldown_from": NOW}, TriggerOutcome.SKIPPED_ACTIVE),
        ({"project_active": False, "active_job_id": 7}, TriggerOutcome.SKIPPED_INACTIVE),
        ({"unconsolidated": 99, "active_job_id": 7}, TriggerOutcome.SKIPPED_BELOW_THRESHOLD),
        # Paused: before the backlog, the job and the cooldown (nothing is deferred).
        ({"project_paused": True}, TriggerOutcome.SKIPPED_PAUSED),
        ({"project_paused": True, "active_job_id": 7}, TriggerOutcome.SKIPPED_PAUSED),
        ({"project_active": False, "project_paused": True}, TriggerOutcome.SKIPPED_INACTIVE),
    ],
)
def test_decide_threshold(overrides: dict[str, object], outcome: TriggerOutcome) -> None:
    assert (
        decide_threshold(probe(**overrides), threshold=100, cooldown=COOLDOWN, now=NOW) is outcome
    )


@pytest.mark.parametrize(
    ("overrides", "deferred"),
    [
        ({"active_job_id": 7}, True),
        ({"cooldown_from": NOW}, True),
        ({"active_job_id": 7, "crossing_deferred": True}, False),  # the first one is kept
        ({"unconsolidated": 99, "active_job_id": 7}, False),
        ({}, False),  # created: nothing to defer
        ({"project_active": False, "active_job_id": 7}, False),
        ({"project_paused": True, "active_job_id": 7}, False),  # paused: dropped
        ({"project_paused": True, "cooldown_from": NOW}, False),
    ],
)
def test_which_crossings_are_deferred(overrides: dict[str, object], deferred: bool) -> None:
    seen = probe(**overrides)
    outcome = decide_threshold(seen, threshold=100, cooldown=COOLDOWN, now=NOW)

    assert defer_crossing(seen, outcome) is deferred


@pytest.mark.parametrize(
    ("latest", "recorded", "decision"),
    [
        (None, False, CatchUp.NOT_NEEDED),
        (NOW - timedelta(minutes=30), True, CatchUp.NOT_NEEDED),
        (NOW - timedelta(minutes=30), False, CatchUp.RUN),
        (NOW - timedelta(hours=1), False, CatchUp.RUN),
        (NOW - timedelta(hours=1, seconds=1), False, CatchUp.TOO_OLD),
    ],
)
def test_decide_catch_up(latest: datetime | None, recorded: bool, decision: CatchUp) -> None:
    assert decide_catch_up(latest, recorded, NOW, timedelta(hours=1)) is decision


def test_a_tick_on_its_own_time_runs_even_with_no_misfire_grace() -> None:
    # The timer calls a moment late; a grace of 0 only means "never catch up a miss".
    no_grace = timedelta(0)
    assert decide_catch_up(NOW, False, NOW + timedelta(seconds=2), no_grace) is CatchUp.RUN
    assert decide_catch_up(NOW, False, NOW + ON_TIME, no_grace) is CatchUp.RUN
    late = NOW + ON_TIME + timedelta(seconds=1)
    assert decide_catch_up(NOW, False, late, no_grace) is CatchUp.TOO_OLD


def test_scope_defaults_and_document() -> None:
    assert parse_scope(None).to_document() == {"unconsolidated_only": True, "dry_run": False}
    scope = parse_scope({"memory_types": ["error_fix", "decision"], "min_age_days": 7})
    assert scope.memory_types == [MemoryType.ERROR_FIX, MemoryType.DECISION]
    assert scope.to_document() == {
        "memory_types": ["error_fix", "decision"],
        "min_age_days": 7,
        "unconsolidated_only": True,
        "dry_run": False,
    }
    assert parse_scope(scope) is scope


@pytest.mark.parametrize(
    ("scope", "location", "message"),
    [
        ({"everything": True}, ("everything",), "Extra inputs are not permitted"),
        ({"memory_types": ["gossip"]}, ("memory_types", 0), "Input should be 'error_fix'"),
        ({"memory_types": []}, ("memory_types",), "at least 1 item"),
        ({"memory_types": ["warning", "warning"]}, ("memory_types",), "must not repeat"),
        ({"min_age_days": -1}, ("min_age_days",), "greater than or equal to 0"),
        ({"min_age_days": 3651}, ("min_age_days",), "less than or equal to 3650"),
        ({"dry_run": "perhaps"}, ("dry_run",), "valid boolean"),
    ],
)
def test_bad_scopes_are_rejected_naming_the_key(
    scope: dict[str, object], location: tuple[object, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_scope(scope)

    (error,) = excinfo.value.errors()
    assert error["loc"] == location
    assert message in error["msg"]


def test_scope_is_immutable() -> None:
    with pytest.raises(ValidationError):
        ConsolidationScope().dry_run = True  # type: ignore[misc]
