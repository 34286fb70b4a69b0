"""One page of a listing, and how it is cut from the rows read for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


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
