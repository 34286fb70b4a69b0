"""A memory's value score and tier: pure functions of explicit inputs.

Score (0..1) = 0.35·min(1, ln(1 + reused_count) / 10)
             + 0.25·exp(-age_days / 90)
             + 0.25·type_weight
             + 0.15·(1.0 if success else 0.3)

Tier: hot if age ≤ 30 days or the score is in the project's top 10%; warm if age ≤ 90
days or in the top 30%; cold otherwise.

A tier set at `now` may change with age alone at the first of learned_at + 30 days and
learned_at + 90 days that is after `now` (`tier_expiry`); the nightly run sets it again
then. Past 90 days only the project's ranking can move it, which every job of the
project re-checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from omoi_os.models import MemoryTier, MemoryType

TYPE_WEIGHTS: dict[MemoryType, float] = {
    MemoryType.ERROR_FIX: 0.9,
    MemoryType.CODEBASE_KNOWLEDGE: 0.85,
    MemoryType.DECISION: 0.8,
    MemoryType.LEARNING: 0.7,
    MemoryType.WARNING: 0.6,
    MemoryType.DISCOVERY: 0.5,
}

HOT_MAX_AGE_DAYS = 30
WARM_MAX_AGE_DAYS = 90
HOT_TOP_FRACTION = 0.10
WARM_TOP_FRACTION = 0.30
_SECONDS_PER_DAY = 86_400


def age_in_days(learned_at: datetime, now: datetime) -> float:
    """Days since the memory was learned; a clock skewed into the future counts as 0."""
    return max((now - learned_at).total_seconds() / _SECONDS_PER_DAY, 0.0)


def value_score(
    *, memory_type: MemoryType, reused_count: int, age_days: float, success: bool
) -> float:
    """The memory's value, between 0 and 1."""
    reuse = min(1.0, math.log1p(reused_count) / 10)
    recency = math.exp(-age_days / 90)
    outcome = 1.0 if success else 0.3
    return 0.35 * reuse + 0.25 * recency + 0.25 * TYPE_WEIGHTS[memory_type] + 0.15 * outcome


@dataclass(frozen=True)
class TierCutoffs:
    """The lowest score that is still in the project's top 10% and top 30%.

    A score equal to a cutoff is inside: memories tied at the edge share the tier,
    so a tier can hold a little more than its fraction, never a tie split in two.
    """

    hot: float
    warm: float

    @classmethod
    def from_scores(cls, scores: Sequence[float]) -> TierCutoffs:
        """Cutoffs over all of a project's scores (no scores: nothing is "top")."""
        if not scores:
            return cls(hot=math.inf, warm=math.inf)
        ranked = sorted(scores, reverse=True)
        return cls(
            hot=_score_at_fraction(ranked, HOT_TOP_FRACTION),
            warm=_score_at_fraction(ranked, WARM_TOP_FRACTION),
        )


def _score_at_fraction(ranked: Sequence[float], fraction: float) -> float:
    # The k-th best score, k = ceil(fraction · n), and at least the best one.
    rank = max(math.ceil(fraction * len(ranked)), 1)
    return ranked[rank - 1]


def tier_for(age_days: float, score: float, cutoffs: TierCutoffs) -> MemoryTier:
    if age_days <= HOT_MAX_AGE_DAYS or score >= cutoffs.hot:
        return MemoryTier.HOT
    if age_days <= WARM_MAX_AGE_DAYS or score >= cutoffs.warm:
        return MemoryTier.WARM
    return MemoryTier.COLD


_AGE_BOUNDARIES = (timedelta(days=HOT_MAX_AGE_DAYS), timedelta(days=WARM_MAX_AGE_DAYS))


def tier_expiry(learned_at: datetime, now: datetime) -> datetime | None:
    """When a tier set at `now` may next change with the memory's age alone: the first
    age boundary after `now`, or None once the memory is past both."""
    for boundary in _AGE_BOUNDARIES:
        if learned_at + boundary > now:
            return learned_at + boundary
    return None
