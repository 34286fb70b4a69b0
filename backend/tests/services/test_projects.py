"""ProjectService on both databases: create, read and update projects; an unknown
id is ProjectNotFound and writes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project
from omoi_os.services.database import DatabaseService
from omoi_os.services.projects import ProjectService
from tests.support.clocks import FakeClock
from tests.support.factories import T0


@pytest.fixture
def projects(db: DatabaseService, clock: FakeClock) -> ProjectService:
    return ProjectService(db, clock=clock)


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
            "cooldown_from": None,
            "threshold_crossed_at": None,
        },
        {
            "id": beta.id,
            "name": "beta",
            "is_active": False,
            "created_at": T0 + timedelta(minutes=1),
            "cooldown_from": None,
            "threshold_crossed_at": None,
        },
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
    untouched = {"cooldown_from": None, "threshold_crossed_at": None}
    assert {row["id"]: row for row in _stored(db)} == {
        project.id: expected | untouched,
        other.id: {"id": other.id, "name": "beta", "is_active": True, "created_at": T0} | untouched,
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
