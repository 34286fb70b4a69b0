"""Scoring and tiering against worked examples (no database, no clock)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from omoi_os.models import MemoryTier, MemoryType
from omoi_os.services.consolidation.scoring import (
    TierCutoffs,
    age_in_days,
    tier_expiry,
    tier_for,
    value_score,
)

# (type, reused_count, age_days, success, score) — computed by hand from
# 0.35·min(1, ln(1+reuse)/10) + 0.25·exp(-age/90) + 0.25·weight + 0.15·(1 or 0.3).
# e.g. error_fix, 1 reuse, 30 days, failed: 0.35·0.0693147 + 0.25·0.7165313 + 0.225 + 0.045.
WORKED = [
    ("error_fix", 0, 0, True, 0.6250000000),
    ("error_fix", 1, 30, False, 0.4733929790),
    ("error_fix", 15, 90, True, 0.5640104656),
    ("error_fix", 10000, 400, False, 0.5953013200),
    ("codebase_knowledge", 0, 0, True, 0.6125000000),
    ("codebase_knowledge", 1, 30, False, 0.4608929790),
    ("codebase_knowledge", 15, 90, True, 0.5515104656),
    ("codebase_knowledge", 10000, 400, False, 0.5828013200),
    ("decision", 0, 0, True, 0.6000000000),
    ("decision", 1, 30, False, 0.4483929790),
    ("decision", 15, 90, True, 0.5390104656),
    ("decision", 10000, 400, False, 0.5703013200),
    ("learning", 0, 0, True, 0.5750000000),
    ("learning", 1, 30, False, 0.4233929790),
    ("learning", 15, 90, True, 0.5140104656),
    ("learning", 10000, 400, False, 0.5453013200),
    ("warning", 0, 0, True, 0.5500000000),
    ("warning", 1, 30, False, 0.3983929790),
    ("warning", 15, 90, True, 0.4890104656),
    ("warning", 10000, 400, False, 0.5203013200),
    ("discovery", 0, 0, True, 0.5250000000),
    ("discovery", 1, 30, False, 0.3733929790),
    ("discovery", 15, 90, True, 0.4640104656),
    ("discovery", 10000, 400, False, 0.4953013200),
]


@pytest.mark.parametrize(("memory_type", "reused", "age", "success", "expected"), WORKED)
def test_value_score_worked_examples(
    memory_type: str, reused: int, age: float, success: bool, expected: float
) -> None:
    score = value_score(
        memory_type=MemoryType(memory_type), reused_count=reused, age_days=age, success=success
    )

    assert score == pytest.approx(expected, abs=1e-9)


def test_reuse_term_is_capped_at_one() -> None:
    # ln(1 + r)/10 reaches 1 at r = e^10 - 1 ≈ 22,025; more reuse adds nothing.
    capped = [
        value_score(
            memory_type=MemoryType.DECISION, reused_count=reuse, age_days=10_000, success=True
        )
        for reuse in (22_026, 10**6, 10**9)
    ]

    assert capped[0] == capped[1] == capped[2] == pytest.approx(0.35 + 0.25 * 0.8 + 0.15, abs=1e-4)
    assert min(capped) >= 0 and max(capped) <= 1


def test_scores_stay_between_zero_and_one() -> None:
    extremes = [
        value_score(memory_type=kind, reused_count=reuse, age_days=age, success=ok)
        for kind in MemoryType
        for reuse in (0, 10**9)
        for age in (0, 10**6)
        for ok in (True, False)
    ]
    assert min(extremes) >= 0 and max(extremes) <= 1


def test_age_in_days() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)

    assert age_in_days(now - timedelta(days=30, hours=12), now) == 30.5
    assert age_in_days(now + timedelta(days=1), now) == 0.0  # a clock in the future


NO_TOP = TierCutoffs(hot=math.inf, warm=math.inf)


@pytest.mark.parametrize(
    ("age", "tier"),
    [(0, "hot"), (30, "hot"), (30.0001, "warm"), (90, "warm"), (90.0001, "cold"), (400, "cold")],
)
def test_tier_edges_by_age(age: float, tier: str) -> None:
    assert tier_for(age, 0.1, NO_TOP) is MemoryTier(tier)


def test_tier_by_score_rank_for_old_memories() -> None:
    cutoffs = TierCutoffs(hot=0.6, warm=0.5)

    assert tier_for(400, 0.6, cutoffs) is MemoryTier.HOT  # equal to the cutoff: inside
    assert tier_for(400, 0.599, cutoffs) is MemoryTier.WARM
    assert tier_for(400, 0.5, cutoffs) is MemoryTier.WARM
    assert tier_for(400, 0.499, cutoffs) is MemoryTier.COLD


def test_cutoffs_are_the_scores_at_the_10th_and_30th_percentile() -> None:
    scores = [n / 100 for n in range(1, 101)]  # 0.01 … 1.00

    cutoffs = TierCutoffs.from_scores(scores)

    assert (cutoffs.hot, cutoffs.warm) == (0.91, 0.71)  # the 10th and 30th best
    assert sum(score >= cutoffs.hot for score in scores) == 10
    assert sum(score >= cutoffs.warm for score in scores) == 30


def test_ties_at_the_cutoff_all_share_the_tier() -> None:
    scores = [0.9] + [0.8] * 5 + [0.1] * 14  # 20 scores; the 2nd best is tied five times

    cutoffs = TierCutoffs.from_scores(scores)

    assert cutoffs.hot == 0.8
    assert sum(score >= cutoffs.hot for score in scores) == 6  # not 2: a tie is not split
    assert cutoffs.warm == 0.8


def test_small_and_empty_projects() -> None:
    assert TierCutoffs.from_scores([0.42]) == TierCutoffs(hot=0.42, warm=0.42)
    assert TierCutoffs.from_scores([0.3, 0.2, 0.1]) == TierCutoffs(hot=0.3, warm=0.3)
    assert TierCutoffs.from_scores([]) == NO_TOP


@pytest.mark.parametrize(
    ("age_days", "expires_after_learned"),
    [(0, 30), (29.9, 30), (30, 90), (89.9, 90), (90, None), (400, None)],
)
def test_a_tier_expires_at_the_first_age_boundary_after_it_was_set(
    age_days: float, expires_after_learned: int | None
) -> None:
    learned = datetime(2026, 1, 1, tzinfo=UTC)

    expiry = tier_expiry(learned, learned + timedelta(days=age_days))

    expected = (
        None if expires_after_learned is None else learned + timedelta(days=expires_after_learned)
    )
    assert expiry == expected
