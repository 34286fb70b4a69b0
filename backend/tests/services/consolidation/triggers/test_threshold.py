"""The threshold trigger (triggers/threshold.py), driven as in production: by
MemoryService after each memory write. It fires once, on the write that crosses the
threshold; waits out the cooldown; skips inactive projects and drops a paused one's
crossings; applies a project's own threshold and cooldown; delays the job's claim by
the debounce; creates one job however many writers cross at once; and a failing check
never loses the memory."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from omoi_os.config import AppSettings
from omoi_os.models import (
    JobStatus,
    MemoryType,
    Project,
    QueuedTask,
    TaskMemory,
    TriggerType,
)
from omoi_os.services.consolidation.decisions import (
    ThresholdProbe,
    TriggerOutcome,
    decide_threshold,
    starts_cooldown,
)
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.triggers.threshold import PROBE
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, NewMemory
from omoi_os.services.projects import ProjectService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store.jobs import CONSOLIDATION_TASK, task_id_for_job
from tests.support.clocks import FakeClock
from tests.support.consolidation import MakeTriggers, finish_job, trigger_count, write_memories
from tests.support.factories import T0, Factories
from tests.support.logs import one, records
from tests.support.rows import stored_job, stored_jobs


def _outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The threshold checks' outcomes, in order (a created job logs as job_created)."""
    return [
        record.outcome
        for record in caplog.records
        if getattr(record, "action", None) in ("threshold_checked", "job_created")
        and getattr(record, "trigger_type", "threshold") == "threshold"
    ]


def test_threshold_fires_once_on_the_crossing_insert(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="omoi_os")
    project = factories.project()
    memories = MemoryService(db, make_triggers(consolidation_threshold=10), clock=clock)

    below = write_memories(memories, project.id, 9)
    crossing = write_memories(memories, project.id, 1)
    beyond = write_memories(memories, project.id, 50)

    assert below == [None] * 9
    assert crossing[0] is not None
    assert beyond == [None] * 50
    (job,) = stored_jobs(db)
    assert (job.id, job.trigger_type, job.triggered_by, job.status) == (
        crossing[0],
        TriggerType.THRESHOLD,
        "threshold",
        JobStatus.PENDING,
    )
    assert job.scope == {"unconsolidated_only": True, "dry_run": False}
    assert factories.count(TaskMemory) == 60
    (row,) = factories.queue_rows()
    assert (row.task_type, row.task_id, row.available_at) == (
        CONSOLIDATION_TASK,
        task_id_for_job(job.id),
        clock(),  # no debounce: claimable at once
    )
    assert _outcomes(caplog) == (
        ["skipped_below_threshold"] * 9 + ["created"] + ["skipped_active"] * 50
    )
    created = one(caplog, "job_created")
    assert (created.job_id, created.project_id) == (job.id, str(project.id))


def test_threshold_waits_for_the_cooldown_then_fires_again(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="omoi_os")
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=300)
    memories = MemoryService(db, triggers, clock=clock)
    (first,) = [job for job in write_memories(memories, project.id, 10) if job]
    # The job fails: the backlog stays over the threshold, and the cooldown starts.
    finish_job(db, first, clock(), status=JobStatus.FAILED)

    clock.advance(timedelta(seconds=299))
    assert write_memories(memories, project.id, 1) == [None]
    assert _outcomes(caplog)[-1] == "skipped_cooldown"
    clock.advance(timedelta(seconds=1))
    (second,) = write_memories(memories, project.id, 1)

    assert second is not None and second != first
    assert [(job.id, job.trigger_type) for job in stored_jobs(db)] == [
        (first, TriggerType.THRESHOLD),
        (second, TriggerType.THRESHOLD),
    ]
    assert trigger_count(triggers, "threshold", "skipped_cooldown") == 1
    assert trigger_count(triggers, "threshold", "created") == 2


def test_threshold_fires_again_after_consolidation_and_a_new_crossing(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    memories = MemoryService(db, make_triggers(consolidation_cooldown=0), clock=clock)
    (first,) = [job for job in write_memories(memories, project.id, 10) if job]
    finish_job(db, first, clock(), consolidate=True)

    again = write_memories(memories, project.id, 10)

    assert again[:9] == [None] * 9
    assert again[9] is not None and again[9] != first
    assert [job.id for job in stored_jobs(db)] == [first, again[9]]


def test_threshold_ignores_inactive_projects(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="omoi_os")
    project = factories.project(is_active=False)
    memories = MemoryService(db, make_triggers(), clock=clock)

    assert write_memories(memories, project.id, 15) == [None] * 15

    assert stored_jobs(db) == []
    assert factories.count(QueuedTask) == 0
    assert factories.count(TaskMemory) == 15
    assert _outcomes(caplog) == ["skipped_inactive"] * 15


def test_threshold_debounce_delays_when_the_job_can_be_claimed(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_debounce=60)
    factories.memories(project.id, 10)

    job_id = triggers.check_threshold_triggers_sync(project.id)

    assert job_id is not None
    (row,) = factories.queue_rows()
    assert row.available_at == clock() + timedelta(seconds=60)
    queue = triggers.task_queue
    with db.transaction() as session:
        assert queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w") == []
    clock.advance(timedelta(seconds=59))
    with db.transaction() as session:
        assert queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w") == []
    clock.advance(timedelta(seconds=1))
    with db.transaction() as session:
        (task,) = queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w")
    assert task.task_id == task_id_for_job(job_id)


@pytest.mark.postgres_only
def test_32_threads_crossing_at_once_create_exactly_one_job(postgres_url: str) -> None:
    db = DatabaseService(postgres_url)
    try:
        factories = Factories(db)
        project = factories.project()
        factories.memories(project.id, 100)
        settings = AppSettings(database_url=postgres_url, consolidation_threshold=100)
        triggers = ConsolidationTriggerService(db, settings=settings)
        barrier = threading.Barrier(32)

        def check(_: int) -> int | None:
            barrier.wait()
            return triggers.check_threshold_triggers_sync(project.id)

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(check, range(32)))

        created = [job_id for job_id in results if job_id is not None]
        assert len(created) == 1
        assert [job.id for job in stored_jobs(db)] == created
        assert [row.task_id for row in factories.queue_rows()] == [task_id_for_job(created[0])]
        assert trigger_count(triggers, "threshold", "created") == 1
        assert trigger_count(triggers, "threshold", "skipped_active") == 31
    finally:
        db.dispose()


def test_a_failing_threshold_check_never_loses_the_memory(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = factories.project()

    class BrokenTriggers(ConsolidationTriggerService):
        def check_threshold_triggers_sync(self, project_id: Any) -> int | None:
            raise RuntimeError("the database hiccuped")

    broken = BrokenTriggers(db, settings=make_triggers().settings, clock=clock)
    memories = MemoryService(db, broken, clock=clock)
    note = NewMemory(memory_type=MemoryType.ERROR_FIX, execution_summary="fixed it")

    with caplog.at_level(logging.ERROR):
        stored = memories.create_memory_sync(project.id, note)

    assert (stored.triggered_job_id, stored.threshold_check_failed) == (None, True)
    with db.read() as session:
        (memory,) = session.scalars(select(TaskMemory))
    assert (memory.id, memory.project_id, memory.execution_summary) == (
        stored.memory.id,
        project.id,
        "fixed it",
    )
    failed = one(caplog, "threshold_check_failed")
    assert failed.project_id == str(project.id)
    assert failed.exc_info is not None and failed.exc_info[0] is RuntimeError
    assert records(caplog, "job_created") == []
    assert stored_jobs(db) == []


# --- crossings that come while they cannot fire, and what starts the cooldown -------------


def test_a_crossing_during_the_cooldown_fires_when_the_cooldown_ends(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=30)
    memories = MemoryService(db, triggers, clock=clock)
    (first,) = [job for job in write_memories(memories, project.id, 10) if job]
    finish_job(db, first, clock(), consolidate=True)  # consolidated: the cooldown runs

    quiet = write_memories(memories, project.id, 50)  # the crossing comes in the cooldown
    assert triggers.threshold.fire_deferred() == []  # the cooldown still runs
    clock.advance(timedelta(seconds=30))
    fired = triggers.threshold.fire_deferred()

    assert quiet == [None] * 50
    assert len(fired) == 1
    assert [(job.id, job.trigger_type, job.status) for job in stored_jobs(db)] == [
        (first, TriggerType.THRESHOLD, JobStatus.COMPLETED),
        (fired[0], TriggerType.THRESHOLD, JobStatus.PENDING),
    ]
    assert triggers.threshold.fire_deferred() == []  # fired once, then forgotten
    assert [row.task_id for row in factories.queue_rows()][-1] == str(fired[0])


def test_a_crossing_while_a_job_runs_fires_when_that_job_is_over(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=0)
    memories = MemoryService(db, triggers, clock=clock)
    (running,) = [job for job in write_memories(memories, project.id, 10) if job]
    # The job consolidates the first ten; ten more arrive while it runs.
    assert write_memories(memories, project.id, 10) == [None] * 10
    assert triggers.threshold.fire_deferred() == []  # the job is still active
    with db.transaction() as session:
        session.execute(update(TaskMemory).where(TaskMemory.id <= 10).values(is_consolidated=True))
    finish_job(db, running, clock())

    fired = triggers.threshold.fire_deferred()

    assert len(fired) == 1 and fired[0] != running


def test_a_deferred_crossing_that_no_longer_holds_is_forgotten(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=0)
    memories = MemoryService(db, triggers, clock=clock)
    (running,) = [job for job in write_memories(memories, project.id, 10) if job]
    write_memories(memories, project.id, 5)  # crossing seen (15 >= 10) while it runs
    finish_job(db, running, clock(), consolidate=True)  # ... and it consolidated all 15

    assert triggers.threshold.fire_deferred() == []
    with db.read() as session:
        assert session.scalar(select(Project.threshold_crossed_at)) is None
    assert [job.id for job in stored_jobs(db)] == [running]


def test_a_job_that_consolidated_nothing_does_not_start_the_cooldown(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=3600)
    memories = MemoryService(db, triggers, clock=clock)
    # A manual job scoped to warnings ends having consolidated none of these.
    scoped = triggers.trigger_consolidation_sync(project.id, scope={"memory_types": ["warning"]})
    finish_job(db, scoped, clock(), consolidate=False)

    writes = write_memories(memories, project.id, 10)

    assert writes[:9] == [None] * 9
    assert writes[9] is not None
    with db.read() as session:
        assert session.scalar(select(Project.cooldown_from)) is None


@pytest.mark.parametrize(
    ("status", "consolidate", "starts"),
    [
        (JobStatus.COMPLETED, True, True),
        (JobStatus.COMPLETED, False, False),
        (JobStatus.FAILED, False, True),
        (JobStatus.TIMED_OUT, False, True),
        (JobStatus.CANCELLED, True, False),
    ],
)
def test_what_starts_the_cooldown(status: JobStatus, consolidate: bool, starts: bool) -> None:
    assert starts_cooldown(status, 5 if consolidate else 0) is starts


# --- a paused project, and a project's own threshold and cooldown -------------------------


def _crossing_deferred(db: DatabaseService) -> bool:
    with db.read() as session:
        return session.scalar(select(Project.threshold_crossed_at)) is not None


def test_a_paused_project_s_crossing_is_dropped_and_resuming_starts_nothing(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_threshold=10)
    memories = MemoryService(db, triggers, clock=clock)
    ProjectService(
        db,
        settings=AppSettings(database_url=db.url),
        queue=TaskQueueService(clock=clock),
        clock=clock,
    ).pause_sync(project.id, by="alice")

    paused_writes = write_memories(memories, project.id, 12)
    assert triggers.threshold.fire_deferred() == []
    ProjectService(
        db,
        settings=AppSettings(database_url=db.url),
        queue=TaskQueueService(clock=clock),
        clock=clock,
    ).resume_sync(project.id)
    assert triggers.threshold.fire_deferred() == []  # resuming fires nothing by itself

    assert paused_writes == [None] * 12
    assert stored_jobs(db) == []
    assert factories.count(QueuedTask) == 0
    assert not _crossing_deferred(db)
    assert trigger_count(triggers, "threshold", "skipped_paused") == 12
    (job_id,) = write_memories(memories, project.id, 1)  # the next write sees the backlog
    assert [job.id for job in stored_jobs(db)] == [job_id]


def test_pausing_forgets_a_deferred_crossing(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    triggers = make_triggers(consolidation_cooldown=0)
    memories = MemoryService(db, triggers, clock=clock)
    (running,) = [job for job in write_memories(memories, project.id, 10) if job]
    write_memories(memories, project.id, 10)  # a crossing while the job runs: deferred
    assert _crossing_deferred(db)

    ProjectService(
        db,
        settings=AppSettings(database_url=db.url),
        queue=TaskQueueService(clock=clock),
        clock=clock,
    ).pause_sync(project.id, by="alice")
    finish_job(db, running, clock())

    assert triggers.threshold.fire_deferred() == []
    assert not _crossing_deferred(db)
    assert [job.id for job in stored_jobs(db)] == [running]


def test_a_project_s_own_threshold_replaces_the_global_one(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    low = factories.project(consolidation_threshold=3).id
    high = factories.project(consolidation_threshold=15).id
    memories = MemoryService(db, make_triggers(consolidation_threshold=10), clock=clock)

    low_jobs = write_memories(memories, low, 3)
    high_jobs = write_memories(memories, high, 15)

    assert [job is not None for job in low_jobs] == [False, False, True]
    assert [job is not None for job in high_jobs] == [False] * 14 + [True]
    assert [job.project_id for job in stored_jobs(db)] == [low, high]


def test_deferred_crossings_fire_by_each_project_s_own_threshold_and_cooldown(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    """Global: threshold 10, cooldown 300 s. `quick` has its own cooldown of 10 s,
    `small` its own threshold of 3 (and the global cooldown)."""
    quick = factories.project(name="quick", consolidation_cooldown=10).id
    small = factories.project(name="small", consolidation_threshold=3).id
    triggers = make_triggers(consolidation_threshold=10, consolidation_cooldown=300)
    memories = MemoryService(db, triggers, clock=clock)
    sizes = {quick: 10, small: 3}
    firsts = [job for project, n in sizes.items() for job in write_memories(memories, project, n)]
    for job in filter(None, firsts):
        finish_job(db, job, clock(), consolidate=True)  # the cooldowns run
    for project, n in sizes.items():
        assert write_memories(memories, project, n) == [None] * n  # crossings in the cooldown

    clock.advance(timedelta(seconds=10))
    fired_quick = triggers.threshold.fire_deferred()
    clock.advance(timedelta(seconds=290))
    fired_small = triggers.threshold.fire_deferred()

    assert [stored_job(db, job).project_id for job in fired_quick] == [quick]
    assert [stored_job(db, job).project_id for job in fired_small] == [small]


# --- one rule, twice: the check after a write (Python) and the deferred pass (SQL) --------


@dataclass(frozen=True)
class _Case:
    """A project with a deferred crossing, as the periodic pass finds it. Global
    settings: threshold 10, cooldown 300 s; each project also has 20 consolidated
    memories, which never count."""

    outcome: TriggerOutcome  # what the check after a write decides
    kept: bool  # whether the crossing is still deferred after the pass
    backlog: int = 10
    is_active: bool = True
    paused: bool = False
    active_job: bool = False
    cooled_for: int | None = None  # seconds since the cooldown started; None: never
    threshold: int | None = None  # the project's own
    cooldown: int | None = None  # the project's own

    @property
    def cooldown_from(self) -> datetime | None:
        return None if self.cooled_for is None else T0 - timedelta(seconds=self.cooled_for)

    def seed(self, factories: Factories) -> uuid.UUID:
        project = factories.project(
            is_active=self.is_active,
            threshold_crossed_at=T0 - timedelta(minutes=10),
            paused_at=T0 if self.paused else None,
            paused_by="alice" if self.paused else None,
            consolidation_threshold=self.threshold,
            consolidation_cooldown=self.cooldown,
            cooldown_from=self.cooldown_from,
        ).id
        factories.memories(project, self.backlog)
        factories.memories(project, 20, is_consolidated=True)
        if self.active_job:
            factories.job(project, status=JobStatus.RUNNING)
        return project


_O = TriggerOutcome
_CASES = {
    "at-the-threshold": _Case(_O.CREATED, kept=False),
    "over-it": _Case(_O.CREATED, kept=False, backlog=25),
    "below-it": _Case(_O.SKIPPED_BELOW_THRESHOLD, kept=False, backlog=9),
    "a-job-is-active": _Case(_O.SKIPPED_ACTIVE, kept=True, active_job=True),
    "active-job-and-cooldown": _Case(_O.SKIPPED_ACTIVE, kept=True, active_job=True, cooled_for=0),
    "cooldown-runs": _Case(_O.SKIPPED_COOLDOWN, kept=True, cooled_for=299),
    "cooldown-just-over": _Case(_O.CREATED, kept=False, cooled_for=300),
    "own-cooldown-runs": _Case(_O.SKIPPED_COOLDOWN, kept=True, cooled_for=59, cooldown=60),
    "own-cooldown-just-over": _Case(_O.CREATED, kept=False, cooled_for=60, cooldown=60),
    "own-cooldown-zero": _Case(_O.CREATED, kept=False, cooled_for=0, cooldown=0),
    "own-threshold-reached": _Case(_O.CREATED, kept=False, backlog=3, threshold=3),
    "own-threshold-not-reached": _Case(
        _O.SKIPPED_BELOW_THRESHOLD, kept=False, backlog=25, threshold=50
    ),
    "inactive": _Case(_O.SKIPPED_INACTIVE, kept=True, is_active=False),
    "inactive-and-below": _Case(_O.SKIPPED_INACTIVE, kept=False, is_active=False, backlog=9),
    "paused": _Case(_O.SKIPPED_PAUSED, kept=False, paused=True),
    "paused-with-an-active-job": _Case(_O.SKIPPED_PAUSED, kept=False, paused=True, active_job=True),
}


def _checked(db: DatabaseService, project: uuid.UUID) -> TriggerOutcome:
    """What the check after a write decides: its own probe, then decide_threshold."""
    with db.read() as session:
        *state, threshold, cooldown = session.execute(
            PROBE, {"project_id": project, "threshold": 10, "cooldown": 300}
        ).one()
    return decide_threshold(
        ThresholdProbe(*state), threshold=threshold, cooldown=timedelta(seconds=cooldown), now=T0
    )


def _deferred_pass(
    db: DatabaseService, make_triggers: MakeTriggers
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """The projects the deferred pass fired, and those whose crossing it kept."""
    triggers = make_triggers(consolidation_threshold=10, consolidation_cooldown=300)
    jobs = triggers.threshold.fire_deferred()
    with db.read() as session:
        kept = set(
            session.scalars(select(Project.id).where(Project.threshold_crossed_at.is_not(None)))
        )
    return {stored_job(db, job).project_id for job in jobs}, kept


@pytest.mark.parametrize("case", _CASES.values(), ids=_CASES.keys())
def test_the_deferred_pass_fires_exactly_when_the_check_would(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, case: _Case
) -> None:
    """decide_threshold (the check after a write) and fire_deferred's SQL (the periodic
    pass, set-based) are one rule written twice: they agree on every case."""
    project = case.seed(factories)

    outcome = _checked(db, project)
    fired, kept = _deferred_pass(db, make_triggers)

    assert outcome is case.outcome
    assert (project in fired) is (outcome is TriggerOutcome.CREATED)
    assert (project in kept) is case.kept


def test_the_deferred_pass_agrees_with_the_check_for_many_projects_at_once(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    """The same table in one pass, as production runs it: each project is judged by
    its own backlog, cooldown and job, never by another's."""
    projects = {name: case.seed(factories) for name, case in _CASES.items()}

    outcomes = {name: _checked(db, project) for name, project in projects.items()}
    fired, kept = _deferred_pass(db, make_triggers)

    assert outcomes == {name: case.outcome for name, case in _CASES.items()}
    assert {name for name, project in projects.items() if project in fired} == {
        name for name, outcome in outcomes.items() if outcome is TriggerOutcome.CREATED
    }
    assert {name for name, project in projects.items() if project in kept} == {
        name for name, case in _CASES.items() if case.kept
    }


def _projects(db: DatabaseService, clock: FakeClock) -> ProjectService:
    """The project service a runtime on `db` would hold."""
    settings = AppSettings(database_url=db.url)
    return ProjectService(db, settings=settings, queue=TaskQueueService(clock=clock), clock=clock)
