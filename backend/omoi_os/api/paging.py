"""The query parameters of every listing: one page of at most MAX_PAGE rows."""

from typing import Annotated

from fastapi import Query

from omoi_os.services.paging import MAX_OFFSET, MAX_PAGE

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
