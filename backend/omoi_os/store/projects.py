"""The SQL of `projects`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.dml import Update

from omoi_os.errors import ProjectNotFound
from omoi_os.models import Project
from omoi_os.models.base import cast_table
from omoi_os.store.sql import execute_counting, insert_ignoring_conflicts, instant_before


def parse_project_id(project_id: uuid.UUID | str) -> uuid.UUID:
    """A project id from a UUID or its text; anything else names no project."""
    if isinstance(project_id, uuid.UUID):
        return project_id
    try:
        return uuid.UUID(str(project_id))
    except ValueError:
        raise ProjectNotFound(project_id) from None


def insert_project(
    session: Session,
    *,
    name: str,
    is_active: bool,
    now: datetime,
    external_key: str | None = None,
) -> uuid.UUID | None:
    """Insert a project; its id, or None if `external_key` is another project's (the
    unique index decides, so concurrent inserts of one key make one project)."""
    statement = (
        insert_ignoring_conflicts(Project)
        .values(
            id=uuid.uuid4(),
            name=name,
            is_active=is_active,
            created_at=now,
            external_key=external_key,
        )
        .returning(Project.__table__.c.id)
    )
    return session.execute(statement).scalar_one_or_none()


def project_by_key(session: Session, external_key: str) -> Project | None:
    """The project the host keys as `external_key`, or None."""
    return session.scalars(select(Project).where(Project.external_key == external_key)).first()


def get_project(
    session: Session, project_id: uuid.UUID, *, for_update: bool = False
) -> Project | None:
    """The project, or None; `for_update` locks its row until the transaction ends."""
    return session.get(Project, project_id, with_for_update=for_update or None)


def project_exists(session: Session | Connection, project_id: uuid.UUID) -> bool:
    return session.scalar(select(Project.id).where(Project.id == project_id)) is not None


def activity(session: Session, project_id: uuid.UUID) -> tuple[bool, bool] | None:
    """(is active, is paused) of the project; None if there is no such project."""
    row = session.execute(
        select(Project.is_active, is_paused()).where(Project.id == project_id)
    ).one_or_none()
    return None if row is None else (bool(row[0]), bool(row[1]))


def active_project_ids() -> Select[Any]:
    """SELECT of every active project's id."""
    return select(Project.id).where(Project.is_active)


def is_paused() -> ColumnElement[bool]:
    """SQL: the project is paused."""
    return Project.paused_at.is_not(None)


def schedulable_project_ids() -> Select[Any]:
    """SELECT of every active project that is not paused (the scheduled tick's candidates)."""
    return active_project_ids().where(Project.paused_at.is_(None))


def count_active_projects(session: Session) -> tuple[int, int]:
    """(active projects not paused, active projects paused), in one scan."""
    paused = func.coalesce(func.sum(case((Project.paused_at.is_not(None), 1), else_=0)), 0)
    statement = select(func.count(), paused).where(Project.is_active)
    total, paused_count = session.execute(statement).one()
    return int(total) - int(paused_count), int(paused_count)


# --- a project's own threshold and cooldown ---------------------------------------------
#
# A project's own setting, when it has one, replaces the global setting: written here
# once for SQL (every statement of the triggers uses these two) and once for Python
# (ProjectService.effective, for the API and the command line). Both must stay: the
# triggers apply it inside their statements (the backlog count stops at the effective
# threshold; the deferred pass decides every project in one statement), and the API
# reports it for projects it has read already. tests/services/test_projects.py checks
# they agree.


def effective_threshold(
    default: ColumnElement[Any], project: type[Project] = Project
) -> ColumnElement[int]:
    """SQL: the project's threshold, or `default` (the global setting) without one;
    `project` may be an alias (a subquery about one project inside a query of many)."""
    return func.coalesce(project.consolidation_threshold, default)


def effective_cooldown(
    default: ColumnElement[Any] | int, project: type[Project] = Project
) -> ColumnElement[int]:
    """SQL: the project's cooldown in seconds, or `default` (the global setting);
    `project` as in effective_threshold."""
    return func.coalesce(project.consolidation_cooldown, default)


def threshold_of(project_id: ColumnElement[Any], default: ColumnElement[Any]) -> ScalarSelect[int]:
    """SQL: one project's effective threshold, as an uncorrelated scalar subquery
    (SQLite admits no reference to an outer query in a LIMIT, but this)."""
    other = aliased(Project)
    statement = select(effective_threshold(default, other))
    return statement.where(other.id == project_id).correlate(None).scalar_subquery()


def largest_threshold_deferred(default: ColumnElement[Any]) -> ScalarSelect[int]:
    """SQL: the largest effective threshold among projects with a deferred crossing: a
    bound for counting their backlogs in one statement (uncorrelated, see threshold_of)."""
    other = aliased(Project)
    statement = select(func.max(effective_threshold(default, other)))
    return (
        statement.where(other.threshold_crossed_at.is_not(None)).correlate(None).scalar_subquery()
    )


def trigger_state(project_id: ColumnElement[Any], *columns: Any) -> Select[Any]:
    """SELECT of what a trigger needs of one project — whether it is active, when its
    cooldown started, whether a crossing is deferred — then `columns` (no row if the
    project does not exist)."""
    return select(
        Project.is_active,
        Project.cooldown_from,
        Project.threshold_crossed_at.is_not(None),
        *columns,
    ).where(Project.id == project_id)


_projects = cast_table(Project)
_START_COOLDOWN = (
    update(_projects)
    .where(_projects.c.id.in_(bindparam("project_ids", expanding=True)))
    .values(cooldown_from=bindparam("at"))
)


def cooldown_statement(project_id: ColumnElement[Any], at: ColumnElement[Any]) -> Update:
    """SQL: the cooldown of project `project_id` (a column of the caller's statement)
    runs from `at`."""
    return update(_projects).where(_projects.c.id == project_id).values(cooldown_from=at)


def start_cooldown(session: Session, project_ids: list[uuid.UUID], *, at: datetime) -> None:
    """The projects' cooldown runs from `at`."""
    if project_ids:
        session.connection().execute(_START_COOLDOWN, {"project_ids": project_ids, "at": at})


def defer_crossing(session: Session, project_id: uuid.UUID, *, at: datetime) -> None:
    """Remember a crossing that cannot fire yet (the first one is kept). A paused
    project's crossing is dropped, even if the pause committed since it was seen."""
    session.execute(
        update(Project)
        .where(
            Project.id == project_id,
            Project.threshold_crossed_at.is_(None),
            Project.paused_at.is_(None),
        )
        .values(threshold_crossed_at=at)
    )


def clear_deferred_crossings(
    session: Session, project_ids: Select[Any] | Sequence[uuid.UUID]
) -> int:
    """Forget the deferred crossings of these projects (ids, or a SELECT of them)."""
    if not isinstance(project_ids, Select) and not project_ids:
        return 0
    statement = (
        update(Project)
        .where(Project.id.in_(project_ids), Project.threshold_crossed_at.is_not(None))
        .values(threshold_crossed_at=None)
    )
    return execute_counting(session, statement)


def with_deferred_crossing() -> Select[Any]:
    """SELECT of the projects with a deferred crossing (the partial index serves it)."""
    return select(Project.id).where(Project.threshold_crossed_at.is_not(None))


def cooled_down(
    project_id: ColumnElement[Any], *, now: datetime, default_cooldown: int
) -> ColumnElement[bool]:
    """SQL: the project is active, not paused, and its cooldown (its own, or
    `default_cooldown` seconds) is over at `now`."""
    # An alias, so that `project_id` may be a column of `projects` in the enclosing
    # query: with the table itself the subquery would not be correlated, and would ask
    # whether *any* project had cooled down.
    other = aliased(Project)
    cooldown = effective_cooldown(default_cooldown, other)
    project = select(other.id).where(
        other.id == project_id,
        other.is_active,
        other.paused_at.is_(None),
        or_(other.cooldown_from.is_(None), other.cooldown_from <= instant_before(now, cooldown)),
    )
    return project.exists()


# --- pausing ---------------------------------------------------------------------------


def pause_project(
    session: Session, project_id: uuid.UUID, *, at: datetime, by: str, reason: str | None
) -> bool:
    """Pause the project unless it is paused already (that pause is kept); a deferred
    threshold crossing is forgotten, so resuming starts nothing by itself. Returns
    whether the project exists."""
    statement = (
        update(Project)
        .where(Project.id == project_id, Project.paused_at.is_(None))
        .values(paused_at=at, paused_by=by, pause_reason=reason, threshold_crossed_at=None)
    )
    return execute_counting(session, statement) == 1 or project_exists(session, project_id)


def resume_project(session: Session, project_id: uuid.UUID) -> bool:
    """Resume the project (a project not paused stays so). Returns whether it exists."""
    statement = (
        update(Project)
        .where(Project.id == project_id)
        .values(paused_at=None, paused_by=None, pause_reason=None)
    )
    return execute_counting(session, statement) == 1


def list_projects(
    session: Session,
    *,
    active: bool | None = None,
    paused: bool | None = None,
    external_key: str | None = None,
    limit: int,
    offset: int,
) -> list[Project]:
    """Projects in id order (stable, and read from the primary key), filtered."""
    statement = select(Project).order_by(Project.id).limit(limit).offset(offset)
    if external_key is not None:
        statement = statement.where(Project.external_key == external_key)
    if active is not None:
        statement = statement.where(Project.is_active == active)
    if paused is not None:
        paused_at = Project.paused_at
        statement = statement.where(paused_at.is_not(None) if paused else paused_at.is_(None))
    return list(session.scalars(statement))
