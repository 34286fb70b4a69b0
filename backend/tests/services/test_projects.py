"""ProjectService on both databases: create, read, update, pause and resume projects,
and their own threshold and cooldown; an unknown id is ProjectNotFound and writes
nothing, and so does a value out of range."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import literal, select

from omoi_os.config import AppSettings
from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project
from omoi_os.services.consolidation.triggers.threshold import PROBE
from omoi_os.services.database import DatabaseService
from omoi_os.services.projects import KEEP, EffectiveSettings, ProjectService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import projects as project_store
from tests.support.clocks import FakeClock
from tests.support.factories import T0


@pytest.fixture
def projects(db: DatabaseService, clock: FakeClock) -> ProjectService:
    settings = AppSettings(consolidation_threshold=100, consolidation_cooldown=300)
    return ProjectService(db, settings=settings, queue=TaskQueueService(clock=clock), clock=clock)


# Columns that creating or renaming a project leaves at their defaults.
UNTOUCHED = {
    "cooldown_from": None,
    "threshold_crossed_at": None,
    "paused_at": None,
    "paused_by": None,
    "pause_reason": None,
    "consolidation_threshold": None,
    "consolidation_cooldown": None,
    "external_key": None,
}


def _stored(db: DatabaseService) -> list[dict[str, Any]]:
    with db.read() as session:
        rows = session.execute(select(Project.__table__).order_by(Project.name)).all()
    return [dict(row._mapping) for row in rows]


def test_create(db: DatabaseService, projects: ProjectService, clock: FakeClock) -> None:
    alpha = projects.create("alpha")
    clock.advance(timedelta(minutes=1))
    beta = projects.create("beta", is_active=False)

    assert isinstance(alpha.id, uuid.UUID) and alpha.id != beta.id
    assert (alpha.name, alpha.is_active, alpha.created_at) == ("alpha", True, T0)
    assert (beta.name, beta.is_active, beta.created_at) == (
        "beta",
        False,
        T0 + timedelta(minutes=1),
    )
    assert _stored(db) == [
        {
            "id": alpha.id,
            "name": "alpha",
            "is_active": True,
            "created_at": T0,
        }
        | UNTOUCHED,
        {
            "id": beta.id,
            "name": "beta",
            "is_active": False,
            "created_at": T0 + timedelta(minutes=1),
        }
        | UNTOUCHED,
    ]


def test_get(projects: ProjectService) -> None:
    created = projects.create("alpha", is_active=False)
    projects.create("beta")

    found = projects.get(created.id)

    assert (found.id, found.name, found.is_active, found.created_at) == (
        created.id,
        "alpha",
        False,
        T0,
    )


def test_get_an_unknown_project(db: DatabaseService, projects: ProjectService) -> None:
    projects.create("alpha")
    before = _stored(db)
    unknown = uuid.uuid4()

    with pytest.raises(ProjectNotFound) as raised:
        projects.get(unknown)

    assert raised.value.project_id == unknown
    assert _stored(db) == before


@pytest.mark.parametrize(
    ("changes", "name", "is_active"),
    [
        ({"name": "renamed"}, "renamed", True),
        ({"is_active": False}, "alpha", False),
        ({"name": "renamed", "is_active": False}, "renamed", False),
        ({}, "alpha", True),
        ({"name": None, "is_active": None}, "alpha", True),
    ],
    ids=["name", "is_active", "both", "nothing", "both-none"],
)
def test_update_changes_only_the_given_fields(
    db: DatabaseService,
    projects: ProjectService,
    changes: dict[str, Any],
    name: str,
    is_active: bool,
) -> None:
    project = projects.create("alpha")
    other = projects.create("beta")

    updated = projects.update(project.id, **changes)

    expected = {"id": project.id, "name": name, "is_active": is_active, "created_at": T0}
    assert (updated.id, updated.name, updated.is_active, updated.created_at) == tuple(
        expected.values()
    )
    reread = projects.get(project.id)
    assert (reread.name, reread.is_active) == (name, is_active)
    assert {row["id"]: row for row in _stored(db)} == {
        project.id: expected | UNTOUCHED,
        other.id: {"id": other.id, "name": "beta", "is_active": True, "created_at": T0} | UNTOUCHED,
    }


def test_update_reactivates(projects: ProjectService) -> None:
    project = projects.create("alpha", is_active=False)

    projects.update(project.id, is_active=True)

    assert projects.get(project.id).is_active is True


def test_update_an_unknown_project_writes_nothing(
    db: DatabaseService, projects: ProjectService
) -> None:
    projects.create("alpha")
    before = _stored(db)
    unknown = uuid.uuid4()

    with pytest.raises(ProjectNotFound) as raised:
        projects.update(unknown, name="renamed", is_active=False)

    assert raised.value.project_id == unknown
    assert _stored(db) == before


# --- a project's own threshold and cooldown ------------------------------------------------


def test_overrides_are_set_kept_and_reset(db: DatabaseService, projects: ProjectService) -> None:
    project = projects.create("alpha")

    set_both = projects.update(project.id, consolidation_threshold=5, consolidation_cooldown=0)
    kept = projects.update(project.id, name="renamed", consolidation_cooldown=KEEP)
    reset = projects.update(project.id, consolidation_threshold=None)

    assert projects.effective(set_both) == EffectiveSettings(threshold=5, cooldown=0)
    assert (kept.consolidation_threshold, kept.consolidation_cooldown) == (5, 0)
    assert (reset.consolidation_threshold, reset.consolidation_cooldown) == (None, 0)
    assert projects.effective(reset) == EffectiveSettings(threshold=100, cooldown=0)
    (row,) = _stored(db)
    assert (row["name"], row["consolidation_threshold"], row["consolidation_cooldown"]) == (
        "renamed",
        None,
        0,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"consolidation_threshold": 0}, "consolidation_threshold must be between 1 and 100000"),
        ({"consolidation_threshold": 100_001}, "consolidation_threshold must be between"),
        ({"consolidation_cooldown": -1}, "consolidation_cooldown must be between 0 and 604800"),
        ({"consolidation_cooldown": 604_801}, "consolidation_cooldown must be between"),
    ],
)
def test_an_override_out_of_range_writes_nothing(
    db: DatabaseService, projects: ProjectService, changes: dict[str, Any], message: str
) -> None:
    project = projects.create("alpha")
    before = _stored(db)

    with pytest.raises(ValueError, match=message):
        projects.update(project.id, name="renamed", **changes)

    assert _stored(db) == before


# Own (threshold, cooldown) overrides: none, either one, a zero cooldown (a value, not
# "unset"), the bounds of each range, and the global values themselves.
OVERRIDES = [(None, None), (5, None), (None, 0), (None, 60), (1, 604_800), (100_000, 0), (10, 300)]


@pytest.mark.parametrize(("threshold", "cooldown"), [(100, 300), (10, 0)])
def test_effective_settings_agree_with_what_the_triggers_apply(
    db: DatabaseService, threshold: int, cooldown: int
) -> None:
    """ProjectService.effective (what the API and the command line report) and the SQL
    the triggers apply (the threshold probe's threshold and cooldown, and the bound its
    backlog count stops at) agree, whatever the project overrides."""
    settings = AppSettings(consolidation_threshold=threshold, consolidation_cooldown=cooldown)
    service = ProjectService(db, settings=settings, queue=TaskQueueService())
    projects = [
        service.update(
            service.create(f"p{n}").id, consolidation_threshold=t, consolidation_cooldown=c
        )
        for n, (t, c) in enumerate(OVERRIDES)
    ]
    defaults = {"threshold": threshold, "cooldown": cooldown}

    applied, count_bounds = [], []
    with db.read() as session:
        for project in projects:
            *_, own_threshold, own_cooldown = session.execute(
                PROBE, defaults | {"project_id": project.id}
            ).one()
            applied.append(EffectiveSettings(threshold=own_threshold, cooldown=own_cooldown))
            bound = project_store.threshold_of(literal(project.id), literal(threshold))
            count_bounds.append(session.scalar(select(bound)))

    reported = [service.effective(project) for project in projects]
    assert applied == reported
    assert count_bounds == [settings.threshold for settings in reported]


# --- pausing ------------------------------------------------------------------------------


def test_pause_is_idempotent_and_resume_clears_it(
    db: DatabaseService, projects: ProjectService, clock: FakeClock
) -> None:
    project = projects.create("alpha")

    paused = projects.pause(project.id, by="alice", reason="noisy agent")
    clock.advance(timedelta(minutes=5))
    again = projects.pause(project.id, by="bob")

    assert (paused.paused_at, paused.paused_by, paused.pause_reason) == (T0, "alice", "noisy agent")
    assert (again.paused_at, again.paused_by, again.pause_reason) == (T0, "alice", "noisy agent")
    projects.resume(project.id)
    projects.resume(project.id)
    assert _stored(db) == [
        {"id": project.id, "name": "alpha", "is_active": True, "created_at": T0} | UNTOUCHED
    ]


def test_pausing_an_unknown_project_or_with_a_long_reason_writes_nothing(
    db: DatabaseService, projects: ProjectService
) -> None:
    project = projects.create("alpha")
    before = _stored(db)

    with pytest.raises(ProjectNotFound):
        projects.pause(uuid.uuid4(), by="alice")
    with pytest.raises(ProjectNotFound):
        projects.resume(uuid.uuid4())
    with pytest.raises(ValueError, match="reason is longer than 500 characters"):
        projects.pause(project.id, by="alice", reason="x" * 501)

    assert _stored(db) == before
