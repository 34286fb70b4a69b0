"""What a consolidation job works on. Unknown keys are rejected, not ignored."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator

from omoi_os.models import MemoryType
from omoi_os.services.consolidation.json_types import JsonInt

# The bounds spelled out for the schema too: pydantic drops them from the JSON schema
# of an optional, validator-wrapped integer.
MinAgeDays = Annotated[
    JsonInt,
    Field(ge=0, le=3650),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 3650}),
]


class ConsolidationScope(BaseModel):
    """The memories a job consolidates; the defaults mean "every unconsolidated memory"."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"memory_types": ["error_fix", "decision"], "min_age_days": 7}]
        },
    )

    memory_types: list[MemoryType] | None = Field(
        default=None,
        min_length=1,
        description="Only memories of these types (default: all six)",
        json_schema_extra={"uniqueItems": True},
    )
    min_age_days: MinAgeDays | None = Field(
        default=None, description="Only memories learned at least this many days ago"
    )
    unconsolidated_only: StrictBool = Field(
        default=True, description="Skip memories that an earlier job already consolidated"
    )
    dry_run: StrictBool = Field(
        default=False, description="Compute scores and tiers and report them; write nothing"
    )

    @field_validator("memory_types")
    @classmethod
    def _no_repeats(cls, value: list[MemoryType] | None) -> list[MemoryType] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("memory types must not repeat")
        return value

    def to_document(self) -> dict[str, Any]:
        """The JSON stored on the job row."""
        return self.model_dump(mode="json", exclude_none=True)


# What threshold and scheduled jobs run on.
DEFAULT_SCOPE = ConsolidationScope()


def parse_scope(scope: ConsolidationScope | dict[str, Any] | None) -> ConsolidationScope:
    """Validate a scope given as a model, a dict or nothing (pydantic's ValidationError,
    a ValueError, names each bad key)."""
    if scope is None:
        return DEFAULT_SCOPE
    if isinstance(scope, ConsolidationScope):
        return scope
    return ConsolidationScope.model_validate(scope)
