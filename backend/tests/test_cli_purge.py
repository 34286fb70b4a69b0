"""`omoi-os purge`: the dry run counts and deletes nothing, the real run deletes and
says what, and bad input is one line that names it and deletes nothing. Run in
process (typer's runner): the command reads the wall clock, so the rows are aged from
it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from omoi_os.cli import app
from omoi_os.models import QueuedTask, TaskState
from tests.support.factories import Factories


def _done_tasks(factories: Factories, *ages_in_days: int) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "task_type": "consolidation",
            "task_id": f"done-{age}",
            "payload": {},
            "state": TaskState.DONE,
            "available_at": now - timedelta(days=age),
            "created_at": now - timedelta(days=age),
            "finished_at": now - timedelta(days=age),
        }
        for age in ages_in_days
    ]
    with factories.db.transaction() as session:
        session.execute(insert(QueuedTask), rows)


def _purge(database_url: str, *args: str, **settings: str) -> tuple[int, str, str]:
    env = {"OMOI_DATABASE_URL": database_url} | {
        f"OMOI_{name.upper()}": value for name, value in settings.items()
    }
    result = CliRunner().invoke(app, ["purge", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def _table_lines(output: str) -> dict[str, int]:
    return {
        line.split()[0]: int(line.split()[1]) for line in output.splitlines() if line[:2] == "  "
    }


def test_purge_dry_run_then_purge(database_url: str, factories: Factories) -> None:
    _done_tasks(factories, 10, 40, 60)
    history = {"task_queue": 2, "consolidation_jobs": 0, "consolidation_ticks": 0}

    dry = _purge(database_url, "--dry-run")
    assert factories.count(QueuedTask) == 3  # the dry run deleted nothing
    older = _purge(database_url, "--older-than-days", "50")
    rest = _purge(database_url)

    assert dry[0] == 0, dry
    assert dry[1].startswith("would delete (dry run; history finished before ")
    assert _table_lines(dry[1]) == history
    assert older[0] == 0, older
    assert older[1].startswith("deleted (history finished before ")
    assert _table_lines(older[1]) == history | {"task_queue": 1}
    assert _table_lines(rest[1]) == history | {"task_queue": 1}
    assert [row.task_id for row in factories.queue_rows()] == ["done-10"]


@pytest.mark.parametrize(
    ("args", "settings", "error"),
    [
        (
            ["--older-than-days", "0"],
            {},
            "omoi-os: error: --older-than-days 0: must be between 1 and 3650 days, not 0\n",
        ),
        (
            ["--dry-run", "--older-than-days", "3651"],
            {},
            "omoi-os: error: --older-than-days 3651: must be between 1 and 3650 days, not 3651\n",
        ),
        (
            [],
            {"retention_days": "0"},
            "omoi-os: error: OMOI_RETENTION_DAYS='0': Input should be greater than or equal to 1\n",
        ),
    ],
    ids=["zero-days", "too-many-days", "bad-setting"],
)
def test_purge_refuses_bad_input_and_deletes_nothing(
    database_url: str,
    factories: Factories,
    args: list[str],
    settings: dict[str, str],
    error: str,
) -> None:
    _done_tasks(factories, 400)

    assert _purge(database_url, *args, **settings) == (2, "", error)
    assert factories.count(QueuedTask) == 1
