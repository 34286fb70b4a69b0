"""How long a failed task waits before its next attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts: base, 2·base, 4·base … capped."""

    base_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(minutes=10)

    def delay(self, failed_attempts: int) -> timedelta:
        """How long to wait after the `failed_attempts`-th failure."""
        exponent = min(max(failed_attempts - 1, 0), 30)
        return min(self.base_delay * (1 << exponent), self.max_delay)
