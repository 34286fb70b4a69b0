"""Scalar types that read JSON as JSON Schema does: 3 and 3.0 are integers, "3" and
true are not; only true and false are booleans."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, StrictBool


def _number_not_text(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_number_not_text)]
JsonBool = StrictBool
