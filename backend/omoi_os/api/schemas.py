"""Request and response bodies of the HTTP API. Requests reject unknown fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from omoi_os.models import JobStatus, MemoryTier, MemoryType, TriggerType
from omoi_os.services.consolidation.json_types import JsonDateTime, JsonInt, number_not_text
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.projects import (
    COOLDOWN_RANGE,
    MAX_PAUSE_REASON,
    THRESHOLD_RANGE,
    EffectiveSettings,
)

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
ExternalKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]*\S[^\x00]*$",
        description="The host's own identifier of the project (unique)",
    ),
]


HostMetadata = Annotated[
    dict[str, Any] | None,
    Field(default=None, description="The host's own reference (a JSON object), kept as given"),
]
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
    external_key: ExternalKey | None = None


# Bounds before the validator: see json_types.JsonInt.
Threshold = Annotated[
    int,
    Field(ge=THRESHOLD_RANGE[0], le=THRESHOLD_RANGE[1]),
    BeforeValidator(number_not_text),
]
Cooldown = Annotated[
    int, Field(ge=COOLDOWN_RANGE[0], le=COOLDOWN_RANGE[1]), BeforeValidator(number_not_text)
]
PauseReason = Annotated[
    str, Field(min_length=1, max_length=MAX_PAUSE_REASON, pattern=STORABLE_TEXT)
]
_NOT_NULLABLE = ("name", "is_active")


class ProjectUpdate(Request):
    # minProperties tells clients (and schemathesis) that {} changes nothing: 422.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"is_active": False}, {"consolidation_threshold": 500}],
            "minProperties": 1,
        }
    )

    # Optional, but not nullable: null would be a third meaning besides "set" and "keep".
    name: ProjectName | SkipJsonSchema[None] = None
    is_active: StrictBool | SkipJsonSchema[None] = None
    # Nullable: null means "the global setting again"; absent leaves it as it is.
    consolidation_threshold: Threshold | None = Field(
        default=None, description="The project's own threshold; null: the global setting"
    )
    consolidation_cooldown: Cooldown | None = Field(
        default=None, description="The project's own cooldown (seconds); null: the global one"
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> ProjectUpdate:
        nulls = sorted(
            name
            for name in self.model_fields_set
            if name in _NOT_NULLABLE and getattr(self, name) is None
        )
        if nulls:
            raise ValueError(f"{', '.join(nulls)} must not be null")
        if not self.model_fields_set:
            raise ValueError(f"give at least one of {', '.join(ProjectUpdate.model_fields)}")
        return self


class PauseRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "database upgrade"}]})

    reason: PauseReason | None = None


class ProjectOut(Response):
    id: uuid.UUID
    name: str
    external_key: str | None = Field(description="The host's own identifier, if it gave one")
    is_active: bool
    created_at: datetime
    paused_at: datetime | None = Field(description="Since when it is paused; null: it is not")
    paused_by: str | None
    pause_reason: str | None
    consolidation_threshold: int | None = Field(description="Its own threshold, if any")
    consolidation_cooldown: int | None = Field(description="Its own cooldown, if any")
    effective_threshold: int = Field(description="The threshold that applies to it")
    effective_cooldown: int = Field(description="The cooldown (seconds) that applies to it")

    @classmethod
    def of(cls, project: Any, effective: EffectiveSettings) -> ProjectOut:
        """The answer for `project`, with the threshold and cooldown that apply to it."""
        stored = {name: getattr(project, name) for name in cls.model_fields if name not in _APPLIED}
        return cls(
            **stored, effective_threshold=effective.threshold, effective_cooldown=effective.cooldown
        )


# ProjectOut's fields that are not the project's columns.
_APPLIED = ("effective_threshold", "effective_cooldown")


class ProjectPage(BaseModel):
    items: list[ProjectOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


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
    metadata: HostMetadata = None


class MemoryOut(Response):
    id: int
    project_id: uuid.UUID
    memory_type: MemoryType
    execution_summary: str
    success: bool
    reused_count: int
    learned_at: datetime
    metadata: dict[str, Any] | None
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


class MemoryItem(Response):
    """A memory of a project's listing, with what consolidation decided."""

    id: int
    memory_type: MemoryType
    execution_summary: str
    learned_at: datetime
    metadata: dict[str, JsonValue] | None = Field(
        description="The host's own reference for the memory, as it gave it"
    )
    is_consolidated: bool
    consolidated_at: datetime | None
    consolidation_job_id: int | None = Field(description="The job that consolidated it")
    tier: MemoryTier | None = Field(description="hot, warm or cold; null until consolidated")
    score: float | None = Field(description="Its consolidation score; null until consolidated")
    tier_expires_at: datetime | None = Field(
        description="When its tier may next change with its age; null once it cannot"
    )


class MemoryDetail(MemoryItem):
    """One memory: a listing's item, and its project, outcome and reuse count."""

    project_id: uuid.UUID
    success: bool
    reused_count: int


class MemoryPage(BaseModel):
    items: list[MemoryItem]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


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
    project_paused: bool = Field(description="Made (manually) while its project was paused")
    cancel_requested_at: datetime | None = Field(
        description="When it was cancelled, or asked to stop at the end of its batch"
    )
    cancelled_by: str | None
    cancel_reason: str | None
    retry_of_id: int | None = Field(description="The failed or timed-out job this one retries")
    retried_by_id: int | None = Field(
        description="The one job that retries this failed or timed-out one (a failure is "
        "retried once)"
    )


class JobCancel(Request):
    reason: str | None = Field(default=None, max_length=500, description="Why, for the record")


class JobPage(BaseModel):
    items: list[JobOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


# --- system -----------------------------------------------------------------------------


class SchedulePauseOut(Response):
    paused_at: datetime
    paused_by: str
    reason: str | None


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
    pause: SchedulePauseOut | None = Field(
        description="The schedule's pause: ticks are recorded, and create no job; null "
        "while the schedule runs"
    )


class TickOut(Response):
    scheduled_for: datetime
    fired_at: datetime
    jobs_created: int
    skipped_active: int = Field(description="Active projects passed over: a job was active")
    skipped_idle: int = Field(description="Active projects passed over: nothing to do")
    skipped_paused: int = Field(description="Active projects passed over: paused")
    schedule_paused: bool = Field(description="Passed over whole: the schedule was paused")
    caught_up: bool = Field(description="Run late by the catch-up, not by its own timer")


class TickPage(BaseModel):
    items: list[TickOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


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
    clock: str = Field(
        default="ok",
        examples=["ok"],
        description='"skewed" when this machine\'s clock is more than 5 s off the '
        "database's. Leases, time-outs, cooldowns and ticks follow the database's clock "
        "either way, so it never makes the answer 503",
    )
    clock_skew_seconds: float | None = Field(
        default=None,
        examples=[0.002],
        description="The database's time minus this machine's, at the last reading; null "
        "where the database's clock is this machine's (SQLite)",
    )


class ErrorBody(BaseModel):
    detail: str


class ConflictBody(BaseModel):
    detail: str
    active_job_id: int | None = Field(
        default=None, description="The project's pending or running job, when that is the conflict"
    )
    status: JobStatus | None = Field(
        default=None, description="The job's status, when that is the conflict (cancel, retry)"
    )
    project_id: uuid.UUID | None = Field(
        default=None, description="The project that has the external key, when that is the conflict"
    )
    retry_job_id: int | None = Field(
        default=None, description="The job that already retries this one, when that is the conflict"
    )
