"""AppSettings: defaults, environment and .env overrides, and every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from omoi_os.config import AppSettings, get_app_settings, masked_database_url, shown_setting


def test_defaults_match_the_task_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMOI_CONSOLIDATION_SCHEDULE")  # set for every test by conftest
    settings = AppSettings()

    assert settings.consolidation_schedule == "0 2 * * *"
    assert settings.consolidation_timezone == "UTC"
    assert settings.consolidation_threshold == 100
    assert settings.consolidation_timeout == 600
    assert settings.consolidation_cooldown == 300
    assert settings.consolidation_misfire_grace == 3600
    assert settings.consolidation_debounce == 0
    assert settings.retention_days == 30
    assert settings.api_tokens == {}
    # The embedded default: a SQLite file in the XDG data directory (set per test).
    assert settings.database_url == f"sqlite:///{tmp_path}/xdg-data/omoi-os/omoi_os.db"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMOI_CONSOLIDATION_SCHEDULE", "*/15 * * * mon-fri")
    monkeypatch.setenv("OMOI_CONSOLIDATION_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("OMOI_CONSOLIDATION_THRESHOLD", "250")
    monkeypatch.setenv("OMOI_CONSOLIDATION_TIMEOUT", "900")
    monkeypatch.setenv("OMOI_CONSOLIDATION_COOLDOWN", "0")
    monkeypatch.setenv("OMOI_API_TOKENS", "alice:0123456789abcdef, bob:fedcba9876543210")
    monkeypatch.setenv("OMOI_DATABASE_URL", "postgres://app:s3cret@db.internal:5432/omoi")

    settings = AppSettings()

    assert settings.consolidation_schedule == "*/15 * * * mon-fri"
    assert settings.consolidation_timezone == "Europe/Berlin"
    assert settings.consolidation_threshold == 250
    assert settings.consolidation_timeout == 900
    assert settings.consolidation_cooldown == 0
    assert {name: token.get_secret_value() for name, token in settings.api_tokens.items()} == {
        "alice": "0123456789abcdef",
        "bob": "fedcba9876543210",
    }
    assert settings.database_url == "postgresql+psycopg://app:s3cret@db.internal:5432/omoi"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OMOI_CONSOLIDATION_THRESHOLD=42\n")

    assert AppSettings().consolidation_threshold == 42


def test_get_app_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_app_settings()
    monkeypatch.setenv("OMOI_CONSOLIDATION_THRESHOLD", "77")

    assert get_app_settings() is first
    get_app_settings.cache_clear()
    assert get_app_settings().consolidation_threshold == 77


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u@h:6543/db", "postgresql+psycopg://u@h:6543/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////var/lib/omoi/x.db", "sqlite:////var/lib/omoi/x.db"),
    ],
)
def test_database_urls_are_normalised(url: str, expected: str) -> None:
    assert AppSettings(database_url=url).database_url == expected


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("consolidation_schedule", "0 2 * *", "has 4 fields"),
        ("consolidation_schedule", "0 0 2 * * *", "has 6 fields"),
        ("consolidation_schedule", "61 2 * * *", "bad minute field '61'"),
        ("consolidation_schedule", "0 2 L * *", "bad day of month field 'L'"),
        ("consolidation_schedule", "0 2 30 2 *", "bad day of month field '30'"),
        ("consolidation_schedule", "@reboot", "unknown macro"),
        ("consolidation_timezone", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        # Files a system keeps beside the IANA zones, and tzdata's placeholder zone.
        ("consolidation_timezone", "localtime", "unknown time zone 'localtime'"),
        ("consolidation_timezone", "posixrules", "unknown time zone 'posixrules'"),
        ("consolidation_timezone", "Factory", "unknown time zone 'Factory'"),
        ("consolidation_threshold", 9, "greater than or equal to 10"),
        ("consolidation_threshold", 1001, "less than or equal to 1000"),
        ("consolidation_timeout", 59, "greater than or equal to 60"),
        ("consolidation_timeout", 3601, "less than or equal to 3600"),
        ("consolidation_cooldown", -1, "greater than or equal to 0"),
        ("consolidation_misfire_grace", -5, "greater than or equal to 0"),
        ("consolidation_debounce", 3601, "less than or equal to 3600"),
        ("consolidation_spread", -1, "greater than or equal to 0"),
        ("retention_days", 0, "greater than or equal to 1"),
        ("retention_days", 3651, "less than or equal to 3650"),
        ("health_queue_wait_limit", 0, "greater than or equal to 1"),
        ("worker_metrics_port", 0, "greater than or equal to 1"),
        ("worker_metrics_port", 65536, "less than or equal to 65535"),
        # conftest's schedule is daily (UTC): the spread must end before the next tick
        ("consolidation_spread", 86_400, "shorter than the shortest time between two ticks"),
        ("database_url", "mysql://u@h/db", "'mysql' databases are not supported"),
        ("database_url", "postgresql+asyncpg://u@h/db", "driver 'postgresql+asyncpg'"),
        ("database_url", "postgresql://u@h", "names no database"),
        ("database_url", "not a url", "is not a database URL"),
        ("api_tokens", "alice", "not of the form name:token"),
        ("api_tokens", "alice:short", "shorter than 16"),
        ("api_tokens", "a:0123456789abcdef,a:fedcba9876543210", "'a' is named twice"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, field: str, value: object, message: str
) -> None:
    monkeypatch.setenv(f"OMOI_{field.upper()}", str(value))

    with pytest.raises(ValidationError) as excinfo:
        AppSettings()

    errors = excinfo.value.errors()
    assert [error["loc"] for error in errors] == [(field,)]
    assert message in errors[0]["msg"]
    assert field in str(excinfo.value)
    assert "input_value" not in str(excinfo.value)  # a host's traceback shows no value


SECRET_SETTINGS = [
    ("database_url", "postgresql://omoi_pw:Pw-1-SECRETpass@127.0.0.1:notaport/omoi", "SECRETpass"),
    ("database_url", "postgresql+psycopg://omoi_pw:Pw-1-SECRETpass@127.0.0.1:5432", "SECRETpass"),
    ("database_url", "mysql://u:p@ss:SECRETpass@h/db?password=SECRET2", "SECRET"),
    ("api_tokens", "alice:TOKalice-0123456789abcdef,bob:short", "TOKalice"),
    ("api_tokens", "alice:TOKalice-0123456789abcdef,bob", "TOKalice"),
]


@pytest.mark.parametrize(("field", "value", "secret"), SECRET_SETTINGS)
def test_a_bad_secret_setting_is_named_without_its_password_or_any_token(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str, secret: str
) -> None:
    monkeypatch.setenv(f"OMOI_{field.upper()}", value)

    with pytest.raises(ValidationError) as excinfo:
        AppSettings()

    shown = f"{excinfo.value} {excinfo.value.errors()[0]['msg']} {shown_setting(field, value)}"
    assert field in str(excinfo.value)
    assert secret not in shown
    assert "***" in shown_setting(field, value)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://h/db", "postgresql://h/db"),
        ("sqlite:////data/omoi.db", "sqlite:////data/omoi.db"),
    ],
)
def test_a_database_urls_password_is_masked_wherever_it_is(raw: str, masked: str) -> None:
    assert masked_database_url(raw) == masked


def test_building_bad_settings_creates_no_files(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        AppSettings(consolidation_threshold=5)

    assert list(tmp_path.iterdir()) == []


def test_a_time_zone_is_trimmed_as_the_schedule_is() -> None:
    settings = AppSettings(
        consolidation_schedule=" 0 2 * * * ", consolidation_timezone=" Europe/Berlin "
    )

    assert settings.consolidation_timezone == "Europe/Berlin"
    assert settings.schedule.timezone.key == "Europe/Berlin"


def test_the_pool_is_sized_from_the_workers_and_the_api_share() -> None:
    settings = AppSettings(worker_concurrency=32, database_api_connections=20)

    assert settings.database_pool_size == 2 * 32 + 2 + 20
    assert AppSettings().database_pool_size == 2 * 1 + 2 + 10


def test_a_spread_shorter_than_the_gap_between_ticks_is_accepted() -> None:
    settings = AppSettings(
        consolidation_schedule="*/15 * * * mon-fri", consolidation_spread=899, database_url=""
    )

    assert settings.consolidation_spread == 899
