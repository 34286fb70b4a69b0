"""Integers read from JSON as JSON Schema reads them: 3 and 3.0 are integers, "3"
and true are not. (For booleans, pydantic's StrictBool already accepts only true
and false.)"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _number_not_text(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_number_not_text)]
