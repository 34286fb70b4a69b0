"""Request and response bodies of the HTTP API. Requests reject unknown fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from omoi_os.models import JobStatus, MemoryType, TriggerType
from omoi_os.services.consolidation.json_types import JsonDateTime, JsonInt
from omoi_os.services.consolidation.scope import ConsolidationScope

# No NUL: PostgreSQL text cannot hold it, so it is refused as bad input (422), not
# later as a 500. (A lone surrogate never gets this far: pydantic refuses it as
# "not a valid unicode string" while reading the JSON.)
STORABLE_TEXT = r"^[^\x00]*$"


def _in_utc_range(value: datetime) -> datetime:
    # 0001-01-01T00:00+01:00 is a valid ISO date that has no UTC equivalent.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range a UTC timestamp can hold") from None


ProjectName = Annotated[str, Field(min_length=1, max_length=200, pattern=STORABLE_TEXT)]
Text20k = Annotated[str, Field(min_length=1, max_length=20_000, pattern=STORABLE_TEXT)]


class Request(BaseModel):
    # Text is stored exactly as sent: no stripping, whose idea of whitespace (Python's)
    # no JSON Schema pattern can state, so the schema could not say what is refused.
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- projects ---------------------------------------------------------------------------


class ProjectCreate(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "checkout-service"}]})

    name: ProjectName
    is_active: StrictBool = True


class ProjectUpdate(Request):
    # minProperties tells clients (and schemathesis) that {} changes nothing: 422.
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"is_active": False}], "minProperties": 1}
    )

    # Optional, but not nullable: null would be a third meaning besides "set" and "keep".
    name: ProjectName | SkipJsonSchema[None] = None
    is_active: StrictBool | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _something_to_change(self) -> ProjectUpdate:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} must not be null")
        if not self.model_fields_set:
            raise ValueError("give at least one of name, is_active")
        return self


class ProjectOut(Response):
    id: uuid.UUID
    name: str
    is_active: bool
    created_at: datetime


# --- memories ---------------------------------------------------------------------------


class MemoryCreate(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "memory_type": "error_fix",
                    "execution_summary": "Retry the flaky upload with exponential backoff",
                    "success": True,
                    "reused_count": 3,
                }
            ]
        }
    )

    memory_type: MemoryType
    execution_summary: Text20k
    success: StrictBool = True
    reused_count: JsonInt = Field(default=0, ge=0, le=1_000_000_000)
    learned_at: Annotated[JsonDateTime, AfterValidator(_in_utc_range)] | None = Field(
        default=None, description="When the lesson was learned (default: now)"
    )


class MemoryOut(Response):
    id: int
    project_id: uuid.UUID
    memory_type: MemoryType
    execution_summary: str
    success: bool
    reused_count: int
    learned_at: datetime
    is_consolidated: bool


class MemoryCreated(BaseModel):
    memory: MemoryOut
    consolidation_job_id: int | None = Field(
        description="The consolidation job this write started by crossing the threshold"
    )
    threshold_check_failed: bool = Field(
        description="The threshold check failed after the memory was stored (it is logged; "
        "the memory is kept)"
    )


# --- consolidation jobs -----------------------------------------------------------------


class JobCreate(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"scope": {"memory_types": ["error_fix"], "dry_run": True}}]
        }
    )

    scope: ConsolidationScope | None = None


class JobOut(Response):
    id: int
    project_id: uuid.UUID
    trigger_type: TriggerType
    status: JobStatus
    scope: dict[str, Any]
    triggered_by: str
    scheduled_for: datetime | None
    created_at: datetime
    claimable_at: datetime | None = Field(
        description="When a worker may first pick the job up: a spread tick's offset for "
        "the project, a debounced threshold crossing; otherwise when it was created"
    )
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None


class JobPage(BaseModel):
    items: list[JobOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


# --- system -----------------------------------------------------------------------------


class ScheduleOut(BaseModel):
    cron: str
    timezone: str
    next_run_utc: datetime | None
    next_run_local: datetime | None
    threshold: int
    cooldown_seconds: int
    debounce_seconds: int
    misfire_grace_seconds: int
    timeout_seconds: int
    scheduler_running: bool


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"])
    database: str = Field(examples=["ok"])
    scheduler: str = Field(examples=["running"])
    queue: str = Field(
        examples=["ok"],
        description='"stalled" when the oldest claimable consolidation task has waited '
        "longer than OMOI_HEALTH_QUEUE_WAIT_LIMIT: no worker is running, or too few; "
        '"unknown" when the database did not answer. It never makes the answer 503: '
        "workers may run elsewhere",
    )
    oldest_claimable_seconds: float | None = Field(
        examples=[0.0],
        description="Seconds the oldest claimable consolidation task has waited for a "
        "worker (0 when none waits); null when the database did not answer",
    )


class ErrorBody(BaseModel):
    detail: str


class ConflictBody(BaseModel):
    detail: str
    active_job_id: int | None = Field(
        default=None, description="The project's pending or running job, when that is the conflict"
    )
