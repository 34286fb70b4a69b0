"""One page of a listing, and how it is cut from the rows read for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# The largest page and the furthest offset a listing serves: an offset is read and
# thrown away, so it bounds what one request may cost.
MAX_PAGE = 200
MAX_OFFSET = 1_000_000


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; `next_offset` is None on the last page."""

    items: list[T]
    limit: int
    offset: int
    next_offset: int | None

    @classmethod
    def cut(cls, rows: Sequence[T], *, limit: int, offset: int) -> Page[T]:
        """The page from `rows`, read with `limit + 1`: one row more says there is more."""
        more = len(rows) > limit
        return cls(list(rows[:limit]), limit, offset, offset + limit if more else None)


def check_page(limit: int, offset: int) -> None:
    """ValueError, naming the argument, unless 1 <= limit <= MAX_PAGE and
    0 <= offset <= MAX_OFFSET."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset must be between 0 and {MAX_OFFSET}, not {offset}")
