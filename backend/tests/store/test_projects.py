"""store/projects.py on both databases: project ids, and the project reads every
trigger and service builds on."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import literal, select

from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project
from omoi_os.services.database import DatabaseService
from omoi_os.store import projects as project_store
from tests.support.factories import T0, Factories

PROJECT_ID = uuid.UUID("6f1c2a3e-8d4b-4c5a-9e7f-0a1b2c3d4e5f")


# --- parse_project_id --------------------------------------------------------------------


def test_parse_project_id_takes_a_uuid_as_it_is() -> None:
    assert project_store.parse_project_id(PROJECT_ID) is PROJECT_ID


@pytest.mark.parametrize(
    "text",
    [
        "6f1c2a3e-8d4b-4c5a-9e7f-0a1b2c3d4e5f",
        "6F1C2A3E-8D4B-4C5A-9E7F-0A1B2C3D4E5F",
        "6f1c2a3e8d4b4c5a9e7f0a1b2c3d4e5f",
        "{6f1c2a3e-8d4b-4c5a-9e7f-0a1b2c3d4e5f}",
    ],
)
def test_parse_project_id_reads_its_text(text: str) -> None:
    assert project_store.parse_project_id(text) == PROJECT_ID


@pytest.mark.parametrize(
    "text", ["", "not-a-uuid", "6f1c2a3e-8d4b-4c5a-9e7f-0a1b2c3d4e5", "1; DROP TABLE projects"]
)
def test_parse_project_id_of_bad_text_names_no_project(text: str) -> None:
    with pytest.raises(ProjectNotFound) as raised:
        project_store.parse_project_id(text)

    assert raised.value.project_id == text
    assert str(raised.value) == f"project {text} does not exist"


# --- writing and reading one project -----------------------------------------------------


def test_insert_project(db: DatabaseService, factories: Factories) -> None:
    with db.transaction() as session:
        project = project_store.insert_project(session, name="alpha", is_active=False, now=T0)
        project_id = project.id

    assert isinstance(project_id, uuid.UUID)
    with db.read() as session:
        stored = session.execute(select(Project.__table__)).one()
    assert dict(stored._mapping) == {
        "id": project_id,
        "name": "alpha",
        "is_active": False,
        "created_at": T0,
        "cooldown_from": None,
        "threshold_crossed_at": None,
        "paused_at": None,
        "paused_by": None,
        "pause_reason": None,
        "consolidation_threshold": None,
        "consolidation_cooldown": None,
        "external_key": None,
    }
    assert factories.count(Project) == 1


def test_get_project(db: DatabaseService, factories: Factories) -> None:
    project = factories.project(name="alpha", created_at=T0 - timedelta(days=1))
    factories.project(name="beta")

    with db.transaction() as session:
        found = project_store.get_project(session, project.id)
        locked = project_store.get_project(session, project.id, for_update=True)
        missing = project_store.get_project(session, uuid.uuid4())
        assert found is not None
        assert locked is found  # the same row, in the same session
        read = (found.id, found.name, found.is_active, found.created_at)

    assert read == (project.id, "alpha", True, T0 - timedelta(days=1))
    assert missing is None


def test_project_exists_and_activity(db: DatabaseService, factories: Factories) -> None:
    active = factories.project(name="active").id
    inactive = factories.project(name="inactive", is_active=False).id
    paused = factories.project(name="paused", paused_at=T0, paused_by="alice").id
    unknown = uuid.uuid4()
    projects = (active, inactive, paused, unknown)

    with db.read() as session:
        exists = [project_store.project_exists(session, p) for p in projects]
        activity = [project_store.activity(session, p) for p in projects]

    assert exists == [True, True, True, False]
    # (is active, is paused); None for a project that does not exist.
    assert activity == [(True, False), (False, False), (True, True), None]


def test_trigger_state_with_further_columns(db: DatabaseService, factories: Factories) -> None:
    active = factories.project(name="active").id
    inactive = factories.project(name="inactive", is_active=False).id
    waiting = factories.project(name="waiting").id
    with db.transaction() as session:
        project_store.start_cooldown(session, [inactive, waiting], at=T0 - timedelta(minutes=1))
        project_store.defer_crossing(session, waiting, at=T0)

    with db.read() as session:
        rows = {
            project_id: session.execute(
                project_store.trigger_state(literal(project_id), Project.name)
            ).all()
            for project_id in (active, inactive, waiting, uuid.uuid4())
        }

    # is_active, cooldown_from, whether a crossing is deferred, then the further columns.
    assert [[tuple(row) for row in found] for found in rows.values()] == [
        [(True, None, False, "active")],
        [(False, T0 - timedelta(minutes=1), False, "inactive")],
        [(True, T0 - timedelta(minutes=1), True, "waiting")],
        [],
    ]


# --- the active projects -----------------------------------------------------------------


def test_active_project_ids_selects_only_active_projects(
    db: DatabaseService, factories: Factories
) -> None:
    active = factories.projects(3)
    factories.projects(2, is_active=False)

    with db.read() as session:
        selected = session.scalars(project_store.active_project_ids()).all()

    assert sorted(selected) == sorted(active)


def test_count_active_projects_not_paused_and_paused(
    db: DatabaseService, factories: Factories
) -> None:
    with db.read() as session:
        assert project_store.count_active_projects(session) == (0, 0)
    factories.projects(4)
    factories.projects(3, is_active=False)
    factories.project(paused_at=T0, paused_by="alice")
    factories.project(is_active=False, paused_at=T0, paused_by="alice")

    with db.read() as session:
        assert project_store.count_active_projects(session) == (4, 1)
        schedulable = session.scalars(project_store.schedulable_project_ids()).all()
    assert len(schedulable) == 4


# --- pausing, listing ----------------------------------------------------------------------


def test_pause_keeps_the_first_pause_and_forgets_a_deferred_crossing(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project(threshold_crossed_at=T0).id
    with db.transaction() as session:
        first = project_store.pause_project(session, project, at=T0, by="alice", reason="why")
        again = project_store.pause_project(session, project, at=T0, by="bob", reason=None)
        missing = project_store.pause_project(session, uuid.uuid4(), at=T0, by="bob", reason=None)
        project_store.defer_crossing(session, project, at=T0)  # dropped: it is paused

    stored = _project(db, project)
    assert (first, again, missing) == (True, True, False)
    assert (stored.paused_at, stored.paused_by, stored.pause_reason) == (T0, "alice", "why")
    assert stored.threshold_crossed_at is None

    with db.transaction() as session:
        resumed = [project_store.resume_project(session, project) for _ in range(2)]
        assert project_store.resume_project(session, uuid.uuid4()) is False
    stored = _project(db, project)
    assert resumed == [True, True]
    assert (stored.paused_at, stored.paused_by, stored.pause_reason) == (None, None, None)


def test_list_projects_filters_and_pages_in_id_order(
    db: DatabaseService, factories: Factories
) -> None:
    active = factories.projects(3)
    inactive = factories.projects(2, is_active=False)
    paused = factories.project(paused_at=T0, paused_by="alice").id

    def listed(**filters: object) -> list[uuid.UUID]:
        with db.read() as session:
            rows = project_store.list_projects(session, limit=100, offset=0, **filters)  # type: ignore[arg-type]
        return [project.id for project in rows]

    everyone = sorted([*active, *inactive, paused])
    assert listed() == everyone
    assert listed(active=True) == sorted([*active, paused])
    assert listed(active=False) == sorted(inactive)
    assert listed(paused=True) == [paused]
    assert listed(active=True, paused=False) == sorted(active)
    with db.read() as session:
        second_page = project_store.list_projects(session, limit=2, offset=2)
    assert [project.id for project in second_page] == everyone[2:4]


# --- a project's own threshold and cooldown ------------------------------------------------


def test_threshold_and_cooldown_are_the_project_s_own_or_the_default(
    db: DatabaseService, factories: Factories
) -> None:
    own = factories.project(consolidation_threshold=3, consolidation_cooldown=0).id
    default = factories.project().id

    with db.read() as session:
        values = {
            project_id: session.execute(
                select(
                    project_store.effective_threshold(literal(100)),
                    project_store.effective_cooldown(literal(300)),
                    project_store.threshold_of(literal(project_id), literal(100)),
                ).where(Project.id == project_id)
            ).one()
            for project_id in (own, default)
        }

    assert [tuple(row) for row in values.values()] == [(3, 0, 3), (100, 300, 100)]


@pytest.mark.parametrize(
    ("own_cooldown", "cooled"),
    [(None, False), (60, True), (59, True), (61, False)],
    ids=["global-300", "own-60-exactly-over", "own-59", "own-61"],
)
def test_cooled_down_uses_the_project_s_own_cooldown(
    db: DatabaseService, factories: Factories, own_cooldown: int | None, cooled: bool
) -> None:
    """The cooldown started 60 s before now; the global cooldown is 300 s."""
    project = factories.project(consolidation_cooldown=own_cooldown).id
    with db.transaction() as session:
        project_store.start_cooldown(session, [project], at=T0 - timedelta(seconds=60))

    with db.read() as session:
        over = session.scalar(
            select(project_store.cooled_down(literal(project), now=T0, default_cooldown=300))
        )

    assert bool(over) is cooled


def _project(db: DatabaseService, project_id: uuid.UUID) -> Project:
    with db.read() as session:
        project = session.get(Project, project_id)
        assert project is not None
        return project
