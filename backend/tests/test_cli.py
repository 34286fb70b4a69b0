"""The `omoi-os` command line, run as a user would: a subprocess with its own environment."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text

from omoi_os import migrations
from omoi_os.migrations import head_revision
from omoi_os.models import ConsolidationJob
from omoi_os.services.database import DatabaseService
from tests.support.factories import Factories
from tests.support.servers import cli_env, free_port, run_cli


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["worker"], ["migrate"], ["purge"], ["trigger"], ["jobs"], ["schedule"]],
)
def test_help_everywhere(command: list[str], tmp_path: Path) -> None:
    result = run_cli(*command, "--help", env=cli_env(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "Usage: omoi-os" in result.stdout


def test_migrate_creates_the_embedded_database(tmp_path: Path) -> None:
    result = run_cli("migrate", env=cli_env(tmp_path))

    assert (result.returncode, result.stdout) == (0, f"database migrated to {head_revision()}\n")
    database = tmp_path / "data" / "omoi-os" / "omoi_os.db"
    db = DatabaseService(f"sqlite:///{database}")
    assert "consolidation_jobs" in inspect(db.engine).get_table_names()
    db.dispose()


def test_migrate_migrates_the_configured_database(empty_database_url: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, database_url=empty_database_url)

    first = run_cli("migrate", env=env)
    again = run_cli("migrate", env=env)  # at head already: nothing to do, same answer
    listed = run_cli("jobs", env=env)

    assert (first.returncode, first.stdout) == (0, f"database migrated to {head_revision()}\n")
    assert (again.returncode, again.stdout) == (0, first.stdout)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "id",
        "project",
        "status",
        "trigger",
        "created",
        "(UTC)",
        "finished",
        "(UTC)",
    ]
    assert len(listed.stdout.splitlines()) == 1
    db = DatabaseService(empty_database_url)
    try:
        assert set(inspect(db.engine).get_table_names()) >= {
            "projects",
            "task_memories",
            "consolidation_jobs",
            "task_queue",
        }
        assert migrations.current_revision(db.engine) == head_revision()
    finally:
        db.dispose()


def test_trigger_then_list_jobs(database_url: str, factories: Factories, tmp_path: Path) -> None:
    project = factories.project()
    env = cli_env(tmp_path, database_url=database_url)

    created = run_cli("trigger", str(project.id), "--scope", '{"dry_run": true}', env=env)
    again = run_cli("trigger", str(project.id), env=env)
    listed = run_cli("jobs", "--project", str(project.id), "--status", "pending", env=env)

    assert created.returncode == 0, created.stderr
    job_id = int(re.fullmatch(r"created consolidation job (\d+)\n", created.stdout)[1])  # type: ignore[index]
    assert again.returncode == 2
    assert again.stderr == (
        f"omoi-os: error: project {project.id} already has active consolidation job {job_id}\n"
    )
    assert listed.returncode == 0
    assert re.search(rf"^\s+{job_id}\s+{project.id}\s+pending\s+manual\s", listed.stdout, re.M)
    with factories.db.get_session() as session:
        (job,) = session.scalars(select(ConsolidationJob)).all()
    assert job.triggered_by.startswith("cli:")
    assert job.scope["dry_run"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trigger", "not-a-uuid"], "project not-a-uuid does not exist"),
        (
            ["trigger", "00000000-0000-4000-8000-000000000000", "--scope", "{"],
            "--scope is not valid JSON",
        ),
        (
            ["trigger", "00000000-0000-4000-8000-000000000000", "--scope", '{"x": 1}'],
            "--scope: x: Extra inputs are not permitted",
        ),
        (["jobs", "--project", "nope"], "--project 'nope' is not a UUID"),
    ],
)
def test_cli_errors_are_one_line(
    database_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli(*args, env=cli_env(tmp_path, database_url=database_url))

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("omoi-os: error: ")
    assert message in result.stderr


@pytest.mark.parametrize(
    "command",
    [["jobs"], ["trigger", "00000000-0000-4000-8000-000000000000"], ["worker"]],
    ids=["jobs", "trigger", "worker"],
)
def test_commands_refuse_an_unmigrated_database(
    empty_database_url: str, tmp_path: Path, command: list[str]
) -> None:
    result = run_cli(*command, env=cli_env(tmp_path, database_url=empty_database_url))

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("omoi-os: error: the database ")
    assert f"has never been migrated; this code needs {head_revision()}." in result.stderr
    assert "Run `omoi-os migrate`" in result.stderr
    db = DatabaseService(empty_database_url)
    try:
        assert inspect(db.engine).get_table_names() == []  # refused, not migrated
    finally:
        db.dispose()


def test_commands_refuse_the_unmigrated_embedded_database(tmp_path: Path) -> None:
    result = run_cli("jobs", env=cli_env(tmp_path))

    assert result.returncode == 2
    assert "has never been migrated" in result.stderr
    assert "Run `omoi-os migrate`" in result.stderr


BAD_SETTINGS = [
    ("consolidation_schedule", "0 2 * *", "has 4 fields"),
    ("consolidation_schedule", "0 0 2 * * *", "has 6 fields"),
    ("consolidation_schedule", "0 25 * * *", "bad hour field '25'"),
    ("consolidation_timezone", "Nowhere/Special", "unknown time zone"),
    ("consolidation_threshold", "9", "greater than or equal to 10"),
    ("consolidation_threshold", "1001", "less than or equal to 1000"),
    ("consolidation_timeout", "59", "greater than or equal to 60"),
    ("consolidation_timeout", "3601", "less than or equal to 3600"),
    ("consolidation_cooldown", "soon", "valid integer"),
    ("database_url", "postgresql://127.0.0.1", "names no database"),
    ("database_url", "mysql://root@127.0.0.1/test", "'mysql' databases are not supported"),
    ("database_url", "::not a url::", "is not a database URL"),
    ("api_tokens", "alice:short", "shorter than 16"),
    # A password and every token are masked, the bad one and the valid ones alike.
    ("database_url", "postgresql://u:Pw-SECRETpass@127.0.0.1:notaport/x", "is not a database URL"),
    ("database_url", "postgresql://u:Pw-SECRETpass@127.0.0.1:5432", "names no database"),
    ("api_tokens", "alice:TOKalice-0123456789abcdef,bob:short", "token of 'bob' is shorter"),
]
SHOWN = {
    "alice:short": "alice:***",
    "postgresql://u:Pw-SECRETpass@127.0.0.1:notaport/x": "postgresql://u:***@127.0.0.1:notaport/x",
    "postgresql://u:Pw-SECRETpass@127.0.0.1:5432": "postgresql://u:***@127.0.0.1:5432",
    "alice:TOKalice-0123456789abcdef,bob:short": "alice:***,bob:***",
}


@pytest.mark.parametrize(("setting", "value", "message"), BAD_SETTINGS)
def test_a_bad_setting_stops_startup_with_one_line_and_creates_nothing(
    empty_database_url: str, tmp_path: Path, setting: str, value: str, message: str
) -> None:
    env = cli_env(tmp_path, **{"database_url": empty_database_url, setting: value})

    result = run_cli("serve", "--port", str(free_port()), env=env)

    assert result.returncode == 2
    shown = SHOWN.get(value, value)
    assert result.stderr.startswith(f"omoi-os: error: OMOI_{setting.upper()}='{shown}': ")
    assert message in result.stderr
    assert "SECRET" not in result.stderr and "TOKalice" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()
    if empty_database_url.startswith("sqlite"):
        assert not Path(empty_database_url.removeprefix("sqlite:///")).exists()
    else:
        db = DatabaseService(empty_database_url)
        assert inspect(db.engine).get_table_names() == []
        db.dispose()


def test_schedule_lists_the_next_runs_in_utc_and_local_time(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path, consolidation_schedule="30 2 * * *", consolidation_timezone="Europe/Berlin"
    )

    result = run_cli("schedule", "--count", "3", env=env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "schedule: 30 2 * * * (Europe/Berlin)"
    assert len(lines) == 4
    assert all(re.fullmatch(r"  \S+ \S+ UTC   \S+T02:30:00\+0[12]:00", line) for line in lines[1:])


# --- start-up failures: one line naming what is wrong, exit 2, nothing started -------------


def _one_line_error(result: Any) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("omoi-os: error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["migrate", "serve", "jobs"])
def test_an_unusable_data_directory_is_one_line(command: str, tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-directory"
    a_file.write_text("")
    for data_dir, why in ((a_file, "File exists"), (Path("/proc/omoi-os"), "No such file")):
        result = run_cli(command, env=cli_env(tmp_path, data_dir=str(data_dir)))

        line = _one_line_error(result)
        assert f"cannot create the database's directory {data_dir}: {why}" in line


@pytest.mark.parametrize("command", ["migrate", "serve", "jobs"])
def test_a_database_from_a_newer_release_is_one_line(
    command: str, database_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(database_url)
    with db.transaction() as session:
        session.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = 'omoi9999'"))
    try:
        line = _one_line_error(run_cli(command, env=cli_env(tmp_path, database_url=database_url)))
    finally:
        with db.transaction() as session:
            session.execute(
                text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = :head"),
                {"head": head_revision()},
            )
        db.dispose()

    assert "is at revision omoi9999, which this release does not know" in line
    assert "newer release of omoi-os" in line


@pytest.mark.parametrize("command", ["migrate", "serve", "jobs"])
def test_a_corrupt_sqlite_file_is_one_line(command: str, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a SQLite database file " * 200)

    line = _one_line_error(
        run_cli(command, env=cli_env(tmp_path, database_url=f"sqlite:///{corrupt}"))
    )

    assert line == "omoi-os: error: cannot use the database: file is not a database"


def test_a_port_in_use_stops_serve_before_anything_starts(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--port", str(port), env=cli_env(tmp_path, database_url=database_url)
        )

    line = _one_line_error(result)
    assert line == f"omoi-os: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "scheduler started" not in result.stderr + result.stdout
    assert "worker" not in result.stderr + result.stdout
