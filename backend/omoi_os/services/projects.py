"""Projects: create, read, list, change (name, activity, own threshold and cooldown),
pause and resume. Deactivating a project cancels its active job."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Final

from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.config import AppSettings
from omoi_os.errors import ProjectKeyTaken, ProjectNotFound
from omoi_os.models import Project
from omoi_os.services.awaitable import awaitable
from omoi_os.services.consolidation.cancellation import Cancellation, cancel_job
from omoi_os.services.database import DatabaseService
from omoi_os.services.paging import Page
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store

DEACTIVATED = "project deactivated"

# The range of a project's own threshold and cooldown (seconds). The database checks
# them too, on PostgreSQL only (migration 0004), so they are checked here for both.
THRESHOLD_RANGE: Final = (1, 100_000)
COOLDOWN_RANGE: Final = (0, 604_800)
MAX_PAUSE_REASON: Final = 500
MAX_EXTERNAL_KEY: Final = 200  # projects.external_key is a VARCHAR(200)


class _Keep(Enum):
    KEEP = "keep"


# "Leave this field as it is" (None is a value here: back to the global setting).
KEEP: Final = _Keep.KEEP


@dataclass(frozen=True)
class EffectiveSettings:
    """The threshold and cooldown that apply to a project: its own, or the global ones."""

    threshold: int
    cooldown: int


class ProjectService:
    """Projects: create (or ensure one per host key), read, list, change, pause and
    resume; deactivating one cancels its active job. Every method is awaitable; its
    synchronous twin ends in `_sync`."""

    def __init__(
        self,
        db: DatabaseService,
        *,
        settings: AppSettings,
        queue: TaskQueueService,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._settings = settings
        self._queue = queue
        self._clock = clock

    def create_sync(
        self, name: str, *, is_active: bool = True, external_key: str | None = None
    ) -> Project:
        """Create a project, keyed by the host's `external_key` if given;
        ProjectKeyTaken if another project has that key."""
        with self._db.transaction() as session:
            project_id = project_store.insert_project(
                session,
                name=name,
                is_active=is_active,
                now=self._clock(),
                external_key=external_key,
            )
            if project_id is None:
                assert external_key is not None  # only the key is unique
                raise ProjectKeyTaken(external_key, self._owner_of(session, external_key))
            return self._found(session, project_id)

    def ensure_sync(self, key: str, *, name: str | None = None) -> Project:
        """The one project the host keys as `key`: made (named `name`, else the key) if
        there is none yet. Idempotent, and concurrent calls with one key return the same
        project: the database's unique index decides which insert makes it."""
        _check_key(key)
        with self._db.transaction() as session:
            project = project_store.project_by_key(session, key)
            if project is not None:
                return project
            project_store.insert_project(
                session, name=name or key, is_active=True, now=self._clock(), external_key=key
            )
            found = project_store.project_by_key(session, key)
            assert found is not None  # inserted now, or by whoever won the race
            return found

    def get_sync(self, project_id: uuid.UUID) -> Project:
        """The project; ProjectNotFound if there is none."""
        with self._db.read() as session:
            return self._found(session, project_id)

    def list_sync(
        self,
        *,
        active: bool | None = None,
        paused: bool | None = None,
        external_key: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Project]:
        """Projects in a stable order (by id), only the active or inactive, paused or
        running ones, or the one keyed `external_key`, if asked."""
        with self._db.read() as session:
            rows = project_store.list_projects(
                session,
                active=active,
                paused=paused,
                external_key=external_key,
                limit=limit + 1,
                offset=offset,
            )
        return Page.cut(rows, limit=limit, offset=offset)

    @staticmethod
    def _found(session: Session, project_id: uuid.UUID) -> Project:
        project = project_store.get_project(session, project_id)
        if project is None:
            raise ProjectNotFound(project_id)
        return project

    @staticmethod
    def _owner_of(session: Session, external_key: str) -> uuid.UUID | None:
        owner = project_store.project_by_key(session, external_key)
        return None if owner is None else owner.id

    def update_sync(
        self,
        project_id: uuid.UUID,
        *,
        name: str | None = None,
        is_active: bool | None = None,
        consolidation_threshold: int | _Keep | None = KEEP,
        consolidation_cooldown: int | _Keep | None = KEEP,
        by: str = job_store.SYSTEM_PRINCIPAL,
    ) -> Project:
        """Change the given fields: None leaves a name or activity as it is; for the
        threshold and cooldown, None means the global setting again and KEEP leaves them.
        ValueError (naming the field) for an override out of range: nothing is written.
        Deactivating cancels the project's pending job and stops its running one after
        the batch in progress (recorded as done by `by`, because it was deactivated)."""
        _check_override("consolidation_threshold", consolidation_threshold, THRESHOLD_RANGE)
        _check_override("consolidation_cooldown", consolidation_cooldown, COOLDOWN_RANGE)
        with self._db.transaction() as session:
            project = project_store.get_project(session, project_id, for_update=True)
            if project is None:
                raise ProjectNotFound(project_id)
            if name is not None:
                project.name = name
            cancelled = None
            if is_active is False and project.is_active:
                cancelled = self._cancel_active_job(session, project_id, by)
            if is_active is not None:
                project.is_active = is_active
            if consolidation_threshold is not KEEP:
                project.consolidation_threshold = consolidation_threshold
            if consolidation_cooldown is not KEEP:
                project.consolidation_cooldown = consolidation_cooldown
        if cancelled is not None:
            cancelled.log()
        return project

    def _cancel_active_job(
        self, session: Session, project_id: uuid.UUID, by: str
    ) -> Cancellation | None:
        job_id = job_store.active_job_id(session, project_id)
        if job_id is None:
            return None
        return cancel_job(
            session, self._queue, job_id, now=self._clock(), by=by, reason=DEACTIVATED
        )

    def effective(self, project: Project) -> EffectiveSettings:
        """The threshold and cooldown the triggers apply to `project`: the Python twin
        of store.projects.effective_threshold and effective_cooldown, which the
        triggers' statements use (why both stay is said there; a test checks they agree)."""
        threshold, cooldown = project.consolidation_threshold, project.consolidation_cooldown
        return EffectiveSettings(
            threshold=self._settings.consolidation_threshold if threshold is None else threshold,
            cooldown=self._settings.consolidation_cooldown if cooldown is None else cooldown,
        )

    def pause_sync(self, project_id: uuid.UUID, *, by: str, reason: str | None = None) -> Project:
        """Pause the project: no scheduled or threshold job until it is resumed (a manual
        trigger still works). A project paused already keeps its pause (idempotent).
        ProjectNotFound if there is none."""
        if reason is not None and len(reason) > MAX_PAUSE_REASON:
            raise ValueError(f"reason is longer than {MAX_PAUSE_REASON} characters")
        with self._db.transaction() as session:
            found = project_store.pause_project(
                session, project_id, at=self._clock(), by=by, reason=reason
            )
        if not found:
            raise ProjectNotFound(project_id)
        return self.get_sync(project_id)

    def resume_sync(self, project_id: uuid.UUID) -> None:
        """Resume the project (idempotent). Nothing is started by it: the next memory
        write or scheduled tick sees the project's backlog as usual."""
        with self._db.transaction() as session:
            found = project_store.resume_project(session, project_id)
        if not found:
            raise ProjectNotFound(project_id)

    create = awaitable(create_sync)
    ensure = awaitable(ensure_sync)
    get = awaitable(get_sync)
    list = awaitable(list_sync)
    update = awaitable(update_sync)
    pause = awaitable(pause_sync)
    resume = awaitable(resume_sync)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_EXTERNAL_KEY:
        raise ValueError(f"key must be a non-blank string of at most {MAX_EXTERNAL_KEY} characters")


def _check_override(field: str, value: int | _Keep | None, bounds: tuple[int, int]) -> None:
    if isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{field} must be between {bounds[0]} and {bounds[1]}, or null")
