"""Values read from JSON as JSON Schema reads them. Integers: 3 and 3.0 are integers,
"3" and true are not. Date-times: a string (RFC 3339), never a number (pydantic's lax
mode would read 0 as 1970-01-01). For booleans, pydantic's StrictBool already accepts
only true and false."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator


def number_not_text(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(number_not_text)]
# A bounded JsonInt inside a union (`… | None`) is written
# `Annotated[int, Field(ge=…, le=…), BeforeValidator(number_not_text)]`: with the bounds
# after the validator, pydantic writes them into the JSON Schema as `ge`/`le`, which
# JSON Schema does not know (so clients would not see them).


def _text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a date-time string (RFC 3339, with an offset)")
    return value


JsonDateTime = Annotated[AwareDatetime, BeforeValidator(_text_only)]
