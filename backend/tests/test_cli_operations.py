"""The operator's verbs of `omoi-os` (pause, resume, ticks, projects, and jobs across
projects), run in-process with typer's runner: what each prints and what it leaves in
the database. (test_cli.py runs the command line as a subprocess.)"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from omoi_os.cli import app
from omoi_os.config import AppSettings
from omoi_os.models import ConsolidationJob, JobStatus, Project, SchedulePause, TriggerType
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from tests.support.factories import T0, Factories


@pytest.fixture
def omoi_os(database_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("OMOI_DATABASE_URL", database_url)
    return CliRunner()


def _run(runner: CliRunner, *args: str) -> Result:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def _stored(db: DatabaseService, project_id: uuid.UUID) -> Project:
    with db.read() as session:
        project = session.get(Project, project_id)
        assert project is not None
        return project


def test_pause_resume_and_see_the_schedule_and_a_project(
    omoi_os: CliRunner, factories: Factories
) -> None:
    project = factories.project(name="checkout").id
    other = factories.project(name="search").id
    scheduled = factories.job(other, trigger_type=TriggerType.SCHEDULED, scheduled_for=T0).id

    paused_schedule = _run(omoi_os, "pause", "--reason", "database upgrade")
    paused_project = _run(omoi_os, "pause", "--project", str(project), "--reason", "noisy")
    listed_paused = _run(omoi_os, "projects", "--paused")
    listed_running = _run(omoi_os, "projects", "--active", "--not-paused")
    jobs = _run(omoi_os, "jobs", "--trigger-type", "scheduled", "--status", "pending")
    no_jobs = _run(omoi_os, "jobs", "--trigger-type", "manual")

    assert paused_schedule.stdout.startswith("schedule paused since ")
    assert " by cli:" in paused_schedule.stdout
    assert paused_project.stdout.startswith(f"project {project} paused since ")
    with factories.db.read() as session:
        (pause,) = session.scalars(select(SchedulePause)).all()
    assert (pause.reason, pause.paused_by.startswith("cli:")) == ("database upgrade", True)
    stored = _stored(factories.db, project)
    assert (stored.pause_reason, stored.paused_by) == ("noisy", pause.paused_by)
    assert [line.split()[:2] for line in listed_paused.stdout.splitlines()[1:]] == [
        [str(project), "checkout"]
    ]
    assert [line.split()[:2] for line in listed_running.stdout.splitlines()[1:]] == [
        [str(other), "search"]
    ]
    assert [line.split()[0] for line in jobs.stdout.splitlines()[1:]] == [str(scheduled)]
    assert no_jobs.stdout.splitlines()[1:] == []

    resumed = [_run(omoi_os, "resume"), _run(omoi_os, "resume", "--project", str(project))]

    assert [result.stdout for result in resumed] == [
        "schedule resumed\n",
        f"project {project} resumed\n",
    ]
    assert factories.count(SchedulePause) == 0
    assert _stored(factories.db, project).paused_at is None


def test_ticks_newest_first(omoi_os: CliRunner, factories: Factories) -> None:
    factories.projects(2, new_memories=1)
    triggers = ConsolidationTriggerService(factories.db, settings=AppSettings())
    triggers.run_scheduled_tick_sync(T0)
    _run(omoi_os, "pause")
    triggers.run_scheduled_tick_sync(T0.replace(hour=13))

    lines = _run(omoi_os, "ticks").stdout.splitlines()

    assert lines[0].split() == [
        "tick",
        "(UTC)",
        "fired",
        "(UTC)",
        "jobs",
        "active",
        "idle",
        "paused",
        "note",
    ]
    assert lines[1].split()[:2] == ["2026-01-05", "13:00:00"]
    assert lines[1].split()[4:] == ["0", "0", "0", "0", "schedule", "paused"]
    assert lines[2].split()[:2] == ["2026-01-05", "12:00:00"]
    assert lines[2].split()[4:] == ["2", "0", "0", "0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pause", "--project", "nope"], "--project 'nope' is not a UUID"),
        (
            ["pause", "--project", "00000000-0000-4000-8000-000000000000"],
            "project 00000000-0000-4000-8000-000000000000 does not exist",
        ),
        (["resume", "--project", "00000000-0000-4000-8000-000000000000"], "does not exist"),
        (["pause", "--reason", "x" * 501], "reason is longer than 500 characters"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(
    omoi_os: CliRunner, factories: Factories, args: list[str], message: str
) -> None:
    result = omoi_os.invoke(app, args)

    assert result.exit_code == 2
    assert result.stderr.startswith("omoi-os: error: ")
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert factories.count(SchedulePause) == 0


def test_help_of_the_operator_s_verbs() -> None:
    for verb in ("pause", "resume", "ticks", "projects", "jobs"):
        result = CliRunner().invoke(app, [verb, "--help"])

        assert result.exit_code == 0, result.output
        assert "Usage: " in result.output


def test_cancel_then_retry_from_the_command_line(omoi_os: CliRunner, factories: Factories) -> None:
    project = factories.project(name="checkout").id
    pending = factories.job(project).id

    cancelled = _run(omoi_os, "cancel", str(pending), "--reason", "wrong scope")
    again = omoi_os.invoke(app, ["cancel", str(pending)])
    refused = omoi_os.invoke(app, ["retry", str(pending)])
    failed = factories.job(project, status=JobStatus.FAILED).id
    retried = _run(omoi_os, "retry", str(failed))

    assert cancelled.stdout == f"cancelled consolidation job {pending}\n"
    assert (again.exit_code, again.stderr) == (
        2,
        f"omoi-os: error: consolidation job {pending} is cancelled; only a pending or "
        "running job can be cancelled\n",
    )
    assert (refused.exit_code, "only a failed or timed-out job" in refused.stderr) == (2, True)
    with factories.db.read() as session:
        jobs = {job.id: job for job in session.scalars(select(ConsolidationJob))}
    assert (jobs[pending].status, jobs[pending].cancel_reason) == (
        JobStatus.CANCELLED,
        "wrong scope",
    )
    assert jobs[pending].cancelled_by is not None and jobs[pending].cancelled_by.startswith("cli:")
    (retry,) = [job for job in jobs.values() if job.retry_of_id == failed]
    assert retried.stdout == f"created consolidation job {retry.id}, retrying job {failed}\n"
    assert retry.status is JobStatus.PENDING
