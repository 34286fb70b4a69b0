"""Application settings: one pydantic-settings class, read from `OMOI_*` variables and `.env`.

Every value is checked when `AppSettings` is built, so a bad cron string, time zone,
range or database URL stops start-up with a message that names the setting.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from omoi_os.schedule import CronSchedule, parse_timezone

SUPPORTED_DATABASES = ("sqlite", "postgresql")
MIN_TOKEN_LENGTH = 16
# Retention keeps at least a day (a job must outlive its cooldown, at most a day) and
# at most ten years.
RETENTION_DAYS_RANGE = (1, 3650)


def default_data_dir() -> Path:
    """Where the embedded SQLite database lives unless told otherwise (XDG data home)."""
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "omoi-os"


# A plain PostgreSQL identifier: no quoting needed, and at most NAMEDATALEN - 1 bytes.
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class AppSettings(BaseSettings):
    """The backend's configuration. Build one per app or test; never mutate it."""

    # hide_input_in_errors: a ValidationError's text (a host's traceback) never shows a
    # value given, which may be a password or a token; shown_setting masks what we print.
    model_config = SettingsConfigDict(
        env_prefix="OMOI_", env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory of the embedded SQLite database (used when database_url is unset)",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file in data_dir. "
        "postgres:// and postgresql:// are read as postgresql+psycopg://",
    )
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema that holds every table of ours, the version table "
        "included (`omoi-os migrate` creates it); unset: the connection's default schema. "
        "Lets our tables live beside a host's own `projects` or `task_memories`",
    )

    consolidation_schedule: str = Field(
        default="0 2 * * *",
        description="Cron schedule for consolidation (crontab(5), default: daily at 2 AM)",
    )
    consolidation_timezone: str = Field(
        default="UTC", description="IANA time zone the schedule is read in"
    )
    consolidation_threshold: int = Field(
        default=100,
        ge=10,
        le=1000,
        description="Number of unconsolidated memories to trigger consolidation",
    )
    consolidation_timeout: int = Field(
        default=600, ge=60, le=3600, description="Max seconds per consolidation job"
    )
    consolidation_cooldown: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Seconds after a project's last job finished during which the "
        "threshold does not fire again",
    )
    consolidation_misfire_grace: int = Field(
        default=3600,
        ge=0,
        le=7 * 86_400,
        description="A tick missed while no replica ran is caught up at start-up if it "
        "is younger than this many seconds",
    )
    consolidation_debounce: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="Seconds after a threshold crossing before its job may be claimed, "
        "so that a burst of writes is consolidated once",
    )

    consolidation_spread: int = Field(
        default=0,
        ge=0,
        le=7 * 86_400,
        description="Seconds over which a scheduled tick's jobs become claimable, each "
        "project at its own stable offset (0: all at the tick); shorter than the time "
        "between two ticks",
    )

    worker_enabled: bool = Field(
        default=True, description="Run consolidation workers inside `omoi-os serve`"
    )
    worker_concurrency: int = Field(
        default=1, ge=1, le=32, description="Jobs one process consolidates at the same time"
    )
    worker_poll_interval: float = Field(
        default=1.0,
        ge=0.05,
        le=60,
        description="Seconds between queue polls (on PostgreSQL NOTIFY wakes workers sooner)",
    )
    worker_lease_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="How long a claimed task stays a worker's without a sign of life; a "
        "killed worker's job is taken over after this",
    )
    worker_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Memories per committed batch"
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="TCP port on which `omoi-os worker` serves its Prometheus metrics "
        "(unset: not served)",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Interface `omoi-os worker` serves its metrics on (0.0.0.0: every one)",
    )

    retention_days: int = Field(
        default=30,
        ge=RETENTION_DAYS_RANGE[0],
        le=RETENTION_DAYS_RANGE[1],
        description="Days finished queue tasks, finished jobs and tick records are kept",
    )

    health_queue_wait_limit: int = Field(
        default=300,
        ge=1,
        le=86_400,
        description="Seconds the oldest claimable consolidation task may wait for a worker "
        "before /healthz flags the queue as stalled (no worker running, or too few)",
    )

    database_api_connections: int = Field(
        default=10,
        ge=1,
        le=200,
        description="Connections of the pool kept for HTTP requests and threshold checks, "
        "beside those of the worker threads and the scheduler",
    )

    api_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="Bearer tokens as comma-separated name:token pairs; the name is "
        "recorded as triggered_by",
    )

    @field_validator("consolidation_schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        CronSchedule.parse(value)
        return value

    @field_validator("consolidation_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return parse_timezone(value).key

    @field_validator("consolidation_spread")
    @classmethod
    def _check_spread(cls, value: int, info: ValidationInfo) -> int:
        expression = info.data.get("consolidation_schedule")
        zone = info.data.get("consolidation_timezone")
        if value == 0 or expression is None or zone is None:
            return value  # nothing to spread, or the schedule is already refused
        gap = CronSchedule.parse(expression, zone).shortest_gap()
        if value >= gap.total_seconds():
            raise ValueError(
                f"must be shorter than the shortest time between two ticks of "
                f"{expression!r} ({int(gap.total_seconds())} s)"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return normalise_database_url(value) if value.strip() else ""

    @field_validator("database_schema", mode="before")
    @classmethod
    def _check_database_schema(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str) or not SCHEMA_NAME.fullmatch(value.strip()):
            raise ValueError(
                f"{value!r} is not a schema name (letters, digits and _, not starting "
                "with a digit, at most 63 characters)"
            )
        return value.strip()

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: Any) -> Any:
        return parse_api_tokens(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_database(self) -> AppSettings:
        if not self.database_url:
            sqlite_url = URL.create("sqlite", database=str(self.data_dir / "omoi_os.db"))
            object.__setattr__(self, "database_url", sqlite_url.render_as_string())
        return self

    @property
    def database_pool_size(self) -> int:
        """Connections one process may hold: two per worker thread (a batch and its
        lease), two for the scheduler's timers, and the API's share. The pool never
        grows past it; a request that finds it empty waits, then answers 503."""
        return 2 * self.worker_concurrency + 2 + self.database_api_connections

    @property
    def schedule(self) -> CronSchedule:
        """The validated schedule in its time zone."""
        return CronSchedule.parse(self.consolidation_schedule, self.consolidation_timezone)


def normalise_database_url(raw: str) -> str:
    """Check `raw` is a URL we support; point PostgreSQL URLs at the psycopg 3 driver."""
    try:
        url = make_url(raw.strip())
    # Neither error's own text is shown: both may quote part of the password.
    except ArgumentError:
        raise ValueError(f"{masked_database_url(raw)!r} is not a database URL") from None
    except ValueError:  # what make_url read as the port is not a number
        raise ValueError(
            f"{masked_database_url(raw)!r} is not a database URL (its port is not a number)"
        ) from None
    if url.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        url = url.set(drivername="postgresql+psycopg")
    elif url.get_backend_name() in ("postgres", "postgresql"):
        raise ValueError(f"driver {url.drivername!r} is not supported (use postgresql+psycopg)")
    elif url.get_backend_name() not in SUPPORTED_DATABASES:
        raise ValueError(
            f"{url.drivername!r} databases are not supported (use sqlite or postgresql)"
        )
    if url.get_backend_name() == "postgresql" and not url.database:
        raise ValueError(f"{url.render_as_string()!r} names no database")
    return url.render_as_string(hide_password=False)


def shown_setting(field: str, value: object) -> str:
    """A setting's value as an error line may show it: the database URL's password and
    every API token masked, the rest as given."""
    if field == "database_url" and isinstance(value, str):
        return repr(masked_database_url(value))
    if field == "api_tokens":
        return repr(masked_api_tokens(value)) if isinstance(value, str) else "'***'"
    return repr(value)


def masked_database_url(raw: str) -> str:
    """`raw` with its password (between the user's colon and the last @ of the
    authority, or a password= parameter) replaced by ***."""
    masked = re.sub(r"(://[^:/@?#]*):.*@", r"\1:***@", raw, count=1)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", masked)


def masked_api_tokens(raw: str) -> str:
    """`name:token,...` with every token replaced by ***, the names kept."""
    return ",".join(
        f"{part.partition(':')[0]}:***" if ":" in part else "***" for part in raw.split(",")
    )


def parse_api_tokens(raw: str) -> dict[str, SecretStr]:
    """Read `name:token,name:token`; reject blanks, duplicates and short tokens."""
    tokens: dict[str, SecretStr] = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, token = pair.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ValueError(f"entry {name or pair!r} is not of the form name:token")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token of {name!r} is shorter than {MIN_TOKEN_LENGTH} characters")
        if name in tokens:
            raise ValueError(f"{name!r} is named twice")
        tokens[name] = SecretStr(token)
    return tokens


@lru_cache(maxsize=1)
def get_app_settings() -> AppSettings:
    """The process-wide settings, read once. Tests build their own `AppSettings(...)`
    or call `get_app_settings.cache_clear()` after changing the environment."""
    return AppSettings()
