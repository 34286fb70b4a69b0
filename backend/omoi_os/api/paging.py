"""The query parameters of every listing: one page of at most MAX_PAGE rows."""

from typing import Annotated

from fastapi import Query

MAX_PAGE = 200
MAX_OFFSET = 1_000_000

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
