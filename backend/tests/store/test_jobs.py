"""store/jobs.py on both databases: how a job is named on the task queue, the one
INSERT every trigger writes jobs with (the database's indexes decide what is
created), the worker's and the sweeper's transitions, ticks, and the reads."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from omoi_os.errors import JobNotFound
from omoi_os.models import (
    ConsolidationJob,
    ConsolidationTick,
    JobStatus,
    Project,
    QueuedTask,
    TaskState,
    TriggerType,
)
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from omoi_os.store import jobs as job_store
from omoi_os.store import schedule_pause as pause_store
from omoi_os.store import ticks as tick_store
from omoi_os.store.jobs import CONSOLIDATION_TASK, NewJob, StartedJob
from omoi_os.store.ticks import TickClaim
from tests.support.clocks import FakeClock
from tests.support.factories import T0, Factories
from tests.support.rows import stored_jobs

FINISHED_STATUSES = [
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.TIMED_OUT,
    JobStatus.CANCELLED,
]


def _row(db: DatabaseService, job_id: int) -> dict[str, Any]:
    """Every column of one job, as stored."""
    with db.read() as session:
        row = session.execute(
            select(ConsolidationJob.__table__).where(ConsolidationJob.id == job_id)
        ).one()
    return dict(row._mapping)


def _insert(
    db: DatabaseService,
    project_ids: list[uuid.UUID],
    *,
    trigger_type: TriggerType = TriggerType.MANUAL,
    scheduled_for: datetime | None = None,
    scope: dict[str, Any] | None = None,
    now: datetime = T0,
) -> list[NewJob]:
    rows = job_store.job_rows(
        select(Project.id).where(Project.id.in_(project_ids)),
        trigger_type=trigger_type,
        scope=scope if scope is not None else {},
        triggered_by="tests",
        scheduled_for=scheduled_for,
        now=now,
        claimable_at=now + timedelta(minutes=3),
    )
    with db.transaction() as session:
        return job_store.insert_jobs(session, rows)


def _job_count(factories: Factories, project_id: uuid.UUID) -> int:
    return factories.count(ConsolidationJob, ConsolidationJob.project_id == project_id)


def _queued_job(db: DatabaseService, factories: Factories, clock: FakeClock) -> ConsolidationJob:
    """A pending job of a new project, with its task queued."""
    job = factories.job(factories.project().id)
    with db.transaction() as session:
        TaskQueueService(clock=clock).enqueue(
            session=session,
            task_type=CONSOLIDATION_TASK,
            tasks=[(job_store.task_id_for_job(job.id), None)],
        )
    return job


# --- a job on the task queue -----------------------------------------------------------


@pytest.mark.parametrize("job_id", [1, 42, 2**31 + 7, 2**53 + 1])
def test_task_id_and_job_id_round_trip(job_id: int) -> None:
    task_id = job_store.task_id_for_job(job_id)

    assert task_id == str(job_id)
    assert job_store.job_id_for_task(task_id) == job_id


def test_job_task_id_sql_equals_task_id_for_job(db: DatabaseService, factories: Factories) -> None:
    project_ids = factories.projects(3)
    jobs = [factories.job(project_ids[0], status=JobStatus.COMPLETED)]
    jobs += [factories.job(project_ids[1]), factories.job(project_ids[2], id=2**53 + 1)]

    with db.read() as session:
        pairs = session.execute(
            select(ConsolidationJob.id, job_store.job_task_id_sql().label("task_id")).order_by(
                ConsolidationJob.id
            )
        ).all()

    assert [tuple(pair) for pair in pairs] == [
        (job.id, job_store.task_id_for_job(job.id)) for job in sorted(jobs, key=lambda j: j.id)
    ]


def test_job_task_id_sql_joins_each_job_to_its_own_queue_task(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    project_ids = factories.projects(3)
    jobs = [factories.job(project_id) for project_id in project_ids]
    queue = TaskQueueService(clock=clock)
    with db.transaction() as session:
        tasks = [(job_store.task_id_for_job(job.id), None) for job in jobs[:2]]
        assert queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=tasks) == 2
        # The same task id under another task type is not this job's task.
        other = [(job_store.task_id_for_job(jobs[2].id), None)]
        assert queue.enqueue(session=session, task_type="other", tasks=other) == 1

    with db.read() as session:
        joined = session.execute(
            select(ConsolidationJob.id, QueuedTask.task_id)
            .join(
                QueuedTask,
                (QueuedTask.task_id == job_store.job_task_id_sql())
                & (QueuedTask.task_type == CONSOLIDATION_TASK),
            )
            .order_by(ConsolidationJob.id)
        ).all()

    assert [tuple(row) for row in joined] == [
        (jobs[0].id, str(jobs[0].id)),
        (jobs[1].id, str(jobs[1].id)),
    ]


# --- insert_jobs -------------------------------------------------------------------------


def test_insert_jobs_creates_one_pending_job_per_project(
    db: DatabaseService, factories: Factories
) -> None:
    project_ids = factories.projects(3)
    scope = {"memory_types": ["decision"], "unconsolidated_only": True, "dry_run": False}
    created_at = T0 + timedelta(seconds=5)

    created = _insert(
        db,
        project_ids,
        trigger_type=TriggerType.SCHEDULED,
        scheduled_for=T0,
        scope=scope,
        now=created_at,
    )

    assert [job.project_id for job in created] == sorted(project_ids)
    assert factories.count(ConsolidationJob) == 3
    for job in created:
        assert _row(db, job.id) == {
            "id": job.id,
            "project_id": job.project_id,
            "trigger_type": TriggerType.SCHEDULED,
            "scope": scope,
            "status": JobStatus.PENDING,
            "triggered_by": "tests",
            "scheduled_for": T0,
            "created_at": created_at,
            "claimable_at": created_at + timedelta(minutes=3),
            "started_at": None,
            "finished_at": None,
            "result": None,
            "error": None,
            "cancel_requested_at": None,
            "cancelled_by": None,
            "cancel_reason": None,
            "retry_of_id": None,
            "retried_by_id": None,
            "project_paused": False,
        }


def test_insert_jobs_counting_admits_what_insert_jobs_does_and_counts_it(
    db: DatabaseService, factories: Factories
) -> None:
    project_ids = factories.projects(3)
    busy = factories.job(project_ids[0])  # an active job: no second one
    rows = job_store.job_rows(
        select(Project.id).where(Project.id.in_(project_ids)),
        trigger_type=TriggerType.SCHEDULED,
        scope={},
        triggered_by="tests",
        scheduled_for=T0,
        now=T0,
        claimable_at=T0,
    )

    with db.transaction() as session:
        created = job_store.insert_jobs_counting(session, rows)
        task_ids = list(session.scalars(job_store.task_ids_of_tick(T0)))

    assert created == 2
    jobs = [job for job in stored_jobs(db) if job.id != busy.id]
    assert sorted(job.project_id for job in jobs) == sorted(project_ids[1:])
    assert sorted(task_ids) == sorted(job_store.task_id_for_job(job.id) for job in jobs)


def test_insert_jobs_with_no_projects_creates_nothing(db: DatabaseService) -> None:
    assert _insert(db, [uuid.uuid4()]) == []


@pytest.mark.parametrize("status", list(JobStatus))
def test_insert_jobs_skips_a_project_with_an_active_job(
    db: DatabaseService, factories: Factories, status: JobStatus
) -> None:
    busy, free = factories.projects(2)
    existing = factories.job(busy, status=status)
    active = status in (JobStatus.PENDING, JobStatus.RUNNING)

    created = _insert(db, [busy, free])

    expected = [free] if active else sorted([busy, free])
    assert [job.project_id for job in created] == expected
    assert _job_count(factories, busy) == (1 if active else 2)
    assert _row(db, existing.id)["status"] == status


def test_insert_jobs_skips_a_second_scheduled_job_for_the_same_tick(
    db: DatabaseService, factories: Factories
) -> None:
    (project,) = factories.projects(1)
    first = _insert(db, [project], trigger_type=TriggerType.SCHEDULED, scheduled_for=T0)
    assert len(first) == 1
    with db.transaction() as session:  # the tick's job ends: the project is free again
        assert job_store.start_job(session, first[0].id, now=T0) is not None
        assert job_store.finish_job(session, first[0].id, status=JobStatus.COMPLETED, now=T0)

    again = _insert(db, [project], trigger_type=TriggerType.SCHEDULED, scheduled_for=T0)
    next_tick = _insert(
        db, [project], trigger_type=TriggerType.SCHEDULED, scheduled_for=T0 + timedelta(days=1)
    )

    assert again == []
    assert [job.project_id for job in next_tick] == [project]
    assert _job_count(factories, project) == 2


def test_insert_jobs_unscheduled_jobs_never_clash_on_the_tick(
    db: DatabaseService, factories: Factories
) -> None:
    (project,) = factories.projects(1)
    factories.job(project, status=JobStatus.COMPLETED)

    created = _insert(db, [project], trigger_type=TriggerType.MANUAL, scheduled_for=None)

    assert [job.project_id for job in created] == [project]
    assert _job_count(factories, project) == 2


def test_insert_jobs_in_one_statement_creates_only_what_the_indexes_admit(
    db: DatabaseService, factories: Factories
) -> None:
    active, ticked, free = factories.projects(3)
    factories.job(active, status=JobStatus.RUNNING)
    factories.job(ticked, status=JobStatus.COMPLETED, scheduled_for=T0)

    created = _insert(
        db, [active, ticked, free], trigger_type=TriggerType.SCHEDULED, scheduled_for=T0
    )

    assert [job.project_id for job in created] == [free]
    with db.read() as session:
        ids = session.scalars(
            select(ConsolidationJob.id).where(ConsolidationJob.project_id == free)
        ).all()
    assert [job.id for job in created] == list(ids)
    assert factories.count(ConsolidationJob) == 3


# --- start_job ---------------------------------------------------------------------------


def test_start_job_marks_a_pending_job_running(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    scope = {"memory_types": ["error_fix"], "dry_run": True}
    result = {"memories_processed": 3}
    job = factories.job(project.id, scope=scope, result=result, error="previous attempt failed")
    started_at = T0 + timedelta(minutes=1)

    with db.transaction() as session:
        started = job_store.start_job(session, job.id, now=started_at)

    assert started == StartedJob(
        id=job.id, project_id=project.id, scope=scope, result=result, cancel_requested_at=None
    )
    row = _row(db, job.id)
    assert (row["status"], row["started_at"], row["error"]) == (JobStatus.RUNNING, started_at, None)
    assert row["finished_at"] is None


def test_start_job_restarts_a_running_job(db: DatabaseService, factories: Factories) -> None:
    """A reclaimed task: the job is still running from its dead worker's claim."""
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0)
    restarted_at = T0 + timedelta(minutes=5)

    with db.transaction() as session:
        started = job_store.start_job(session, job.id, now=restarted_at)

    assert started == StartedJob(
        id=job.id, project_id=project.id, scope={}, result=None, cancel_requested_at=None
    )
    row = _row(db, job.id)
    assert (row["status"], row["started_at"]) == (JobStatus.RUNNING, restarted_at)


@pytest.mark.parametrize("status", FINISHED_STATUSES)
def test_start_job_leaves_a_finished_job_alone(
    db: DatabaseService, factories: Factories, status: JobStatus
) -> None:
    project = factories.project()
    job = factories.job(
        project.id,
        status=status,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=30),
        error="it ended",
        result={"memories_processed": 1},
    )
    before = _row(db, job.id)

    with db.transaction() as session:
        started = job_store.start_job(session, job.id, now=T0 + timedelta(hours=1))

    assert started is None
    assert _row(db, job.id) == before


def test_start_job_of_an_unknown_job_is_none(db: DatabaseService) -> None:
    with db.transaction() as session:
        assert job_store.start_job(session, 12345, now=T0) is None


# --- save_progress and finish_job --------------------------------------------------------


def test_save_progress_of_a_running_job(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0)

    with db.transaction() as session:
        saved = job_store.save_progress(session, job.id, {"memories_processed": 7})

    assert saved is job_store.Saved.RUNNING
    row = _row(db, job.id)
    assert (row["status"], row["result"]) == (JobStatus.RUNNING, {"memories_processed": 7})


def test_save_progress_tells_of_a_requested_stop(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0)
    with db.transaction() as session:
        asked = job_store.request_stop(session, job.id, now=T0, by="alice", reason="incident")
        asked_again = job_store.request_stop(session, job.id, now=T0, by="bob", reason="again")

    with db.transaction() as session:
        saved = job_store.save_progress(session, job.id, {"memories_processed": 7})

    assert (asked, asked_again, saved) == (True, False, job_store.Saved.CANCEL_REQUESTED)
    row = _row(db, job.id)
    assert (row["status"], row["result"]) == (JobStatus.RUNNING, {"memories_processed": 7})
    assert (row["cancel_requested_at"], row["cancelled_by"], row["cancel_reason"]) == (
        T0,
        "alice",
        "incident",
    )


@pytest.mark.parametrize("status", list(JobStatus))
def test_cancel_pending_job_cancels_only_a_pending_one(
    db: DatabaseService, factories: Factories, status: JobStatus
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=status)
    before = _row(db, job.id)

    with db.transaction() as session:
        cancelled = job_store.cancel_pending_job(session, job.id, now=T0, by="alice", reason="r")

    assert cancelled is (status is JobStatus.PENDING)
    row = _row(db, job.id)
    if cancelled:
        assert (row["status"], row["finished_at"], row["cancel_requested_at"]) == (
            JobStatus.CANCELLED,
            T0,
            T0,
        )
        assert (row["cancelled_by"], row["cancel_reason"]) == ("alice", "r")
    else:
        assert row == before


@pytest.mark.parametrize("status", [JobStatus.PENDING, *FINISHED_STATUSES])
def test_save_progress_only_while_running(
    db: DatabaseService, factories: Factories, status: JobStatus
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=status, result={"memories_processed": 1})
    before = _row(db, job.id)

    with db.transaction() as session:
        saved = job_store.save_progress(session, job.id, {"memories_processed": 99})

    assert saved is job_store.Saved.NOT_RUNNING
    assert _row(db, job.id) == before


@pytest.mark.parametrize("status", FINISHED_STATUSES)
def test_finish_job_to_a_final_status(
    db: DatabaseService, factories: Factories, status: JobStatus
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0)
    ended = T0 + timedelta(minutes=2)

    with db.transaction() as session:
        finished = job_store.finish_job(
            session, job.id, status=status, now=ended, result={"memories_processed": 5}, error="e"
        )

    assert finished is True
    row = _row(db, job.id)
    assert (row["status"], row["finished_at"], row["result"], row["error"]) == (
        status,
        ended,
        {"memories_processed": 5},
        "e",
    )
    assert row["started_at"] == T0


def test_finish_job_back_to_pending_keeps_it_unfinished_and_its_result(
    db: DatabaseService, factories: Factories
) -> None:
    """A hand-back or a retry: no finished_at; result None leaves the saved progress."""
    project = factories.project()
    job = factories.job(
        project.id,
        status=JobStatus.RUNNING,
        started_at=T0,
        result={"memories_processed": 4},
        error="old",
    )

    with db.transaction() as session:
        finished = job_store.finish_job(
            session, job.id, status=JobStatus.PENDING, now=T0 + timedelta(minutes=1)
        )

    assert finished is True
    row = _row(db, job.id)
    assert (row["status"], row["finished_at"], row["result"], row["error"]) == (
        JobStatus.PENDING,
        None,
        {"memories_processed": 4},
        None,
    )


@pytest.mark.parametrize("status", [JobStatus.PENDING, *FINISHED_STATUSES])
def test_finish_job_only_while_running(
    db: DatabaseService, factories: Factories, status: JobStatus
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=status, error="as it was")
    before = _row(db, job.id)

    with db.transaction() as session:
        finished = job_store.finish_job(
            session,
            job.id,
            status=JobStatus.COMPLETED,
            now=T0 + timedelta(hours=1),
            result={"memories_processed": 1},
        )

    assert finished is False
    assert _row(db, job.id) == before


# --- the sweeper's transitions -----------------------------------------------------------


def test_overdue_jobs_are_timed_out(db: DatabaseService, factories: Factories) -> None:
    overdue_p, recent_p, pending_p, done_p = factories.projects(4)
    overdue = factories.job(overdue_p, status=JobStatus.RUNNING, started_at=T0 - timedelta(hours=1))
    recent = factories.job(recent_p, status=JobStatus.RUNNING, started_at=T0 - timedelta(minutes=5))
    pending = factories.job(pending_p)
    done = factories.job(
        done_p,
        status=JobStatus.COMPLETED,
        started_at=T0 - timedelta(hours=2),
        finished_at=T0 - timedelta(hours=1),
    )
    untouched = {job.id: _row(db, job.id) for job in (recent, pending, done)}
    started_before = T0 - timedelta(minutes=10)

    with db.read() as session:
        overdue_ids = job_store.overdue_job_ids(session, started_before=started_before)
    with db.transaction() as session:
        # `recent` and `done` are passed too: only what is still overdue is ended.
        timed_out = job_store.time_out_jobs(
            session,
            [overdue.id, recent.id, done.id],
            started_before=started_before,
            now=T0,
            reason="too slow",
        )

    assert overdue_ids == [overdue.id]
    assert timed_out == [(overdue.id, overdue_p)]
    row = _row(db, overdue.id)
    assert (row["status"], row["finished_at"], row["error"]) == (
        JobStatus.TIMED_OUT,
        T0,
        "too slow",
    )
    assert {job_id: _row(db, job_id) for job_id in untouched} == untouched


def test_a_job_restarted_since_it_was_found_overdue_is_not_timed_out(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING, started_at=T0 - timedelta(hours=1))
    started_before = T0 - timedelta(minutes=10)
    with db.read() as session:
        assert job_store.overdue_job_ids(session, started_before=started_before) == [job.id]
    with db.transaction() as session:  # another worker takes it over meanwhile
        assert job_store.start_job(session, job.id, now=T0) is not None

    with db.transaction() as session:
        timed_out = job_store.time_out_jobs(
            session, [job.id], started_before=started_before, now=T0, reason="too slow"
        )

    assert timed_out == []
    row = _row(db, job.id)
    assert (row["status"], row["started_at"], row["error"]) == (JobStatus.RUNNING, T0, None)


def test_time_out_jobs_with_no_ids(db: DatabaseService) -> None:
    with db.transaction() as session:
        assert job_store.time_out_jobs(session, [], started_before=T0, now=T0, reason="x") == []


def test_fail_active_jobs_whose_queue_task_is_dead(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    failed_p, expired_p, queued_p, done_p, other_p = factories.projects(5)
    failed_job = factories.job(failed_p)
    expired_job = factories.job(expired_p, status=JobStatus.RUNNING, started_at=T0)
    queued_job = factories.job(queued_p)
    done_job = factories.job(done_p, status=JobStatus.COMPLETED, finished_at=T0)
    other_job = factories.job(other_p)
    queue = TaskQueueService(clock=clock, max_attempts=1)

    def tasks(*jobs: ConsolidationJob) -> list[tuple[str, None]]:
        return [(job_store.task_id_for_job(job.id), None) for job in jobs]

    with db.transaction() as session:
        # Dead after its only attempt failed (the finished job's task too).
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=tasks(failed_job))
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=tasks(done_job))
        claimed = queue.claim(
            session=session, task_types=[CONSOLIDATION_TASK], worker_id="w", limit=2
        )
        assert [task.task_id for task in claimed] == [str(failed_job.id), str(done_job.id)]
        for task in claimed:
            queue.fail(session=session, task=task, worker_id="w", error=f"boom {task.task_id}")
        # Dead because its worker's lease ran out on its only attempt.
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=tasks(expired_job))
        assert len(queue.claim(session=session, task_types=[CONSOLIDATION_TASK], worker_id="w"))
        clock.advance(queue.lease + timedelta(seconds=1))
        assert queue.reclaim_expired(session=session) == 1
        # Queued: it can still run.
        queue.enqueue(session=session, task_type=CONSOLIDATION_TASK, tasks=tasks(queued_job))
        # A dead task of another type under the same task id is not this job's task.
        queue.enqueue(session=session, task_type="other", tasks=tasks(other_job))
        (other_task,) = queue.claim(session=session, task_types=["other"], worker_id="w")
        queue.fail(session=session, task=other_task, worker_id="w", error="not ours")
    untouched = {job.id: _row(db, job.id) for job in (queued_job, done_job, other_job)}
    now = T0 + timedelta(hours=1)

    with db.transaction() as session:
        dead_task = TaskQueueService.dead_task(CONSOLIDATION_TASK, job_store.job_task_id_sql())
        failed = job_store.fail_active_jobs(session, dead_task=dead_task, now=now)

    assert sorted(failed) == sorted([(failed_job.id, failed_p), (expired_job.id, expired_p)])
    failed_row, expired_row = _row(db, failed_job.id), _row(db, expired_job.id)
    assert (failed_row["status"], failed_row["finished_at"], failed_row["error"]) == (
        JobStatus.FAILED,
        now,
        f"queue gave up: boom {failed_job.id}",
    )
    assert (expired_row["status"], expired_row["finished_at"], expired_row["error"]) == (
        JobStatus.FAILED,
        now,
        "queue gave up: lease of w expired",
    )
    assert {job_id: _row(db, job_id) for job_id in untouched} == untouched


def test_a_queued_task_is_not_a_dead_one(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    job = _queued_job(db, factories, clock)

    with db.transaction() as session:
        dead_task = TaskQueueService.dead_task(CONSOLIDATION_TASK, job_store.job_task_id_sql())
        probed = session.execute(select(ConsolidationJob.id, dead_task.exists())).all()
        failed = job_store.fail_active_jobs(session, dead_task=dead_task, now=T0)

    assert [tuple(row) for row in probed] == [(job.id, False)]
    assert failed == []
    assert _row(db, job.id)["status"] == JobStatus.PENDING


# --- ticks -------------------------------------------------------------------------------


def test_record_tick_runs_it_once_then_finds_it_recorded(db: DatabaseService) -> None:
    tick = T0.replace(hour=2)
    with db.read() as session:
        assert tick_store.tick_recorded(session, tick) is False

    with db.transaction() as session:
        first = tick_store.record_tick(session, tick, now=tick + timedelta(seconds=1))
    with db.transaction() as session:
        second = tick_store.record_tick(session, tick, now=tick + timedelta(minutes=1))

    assert (first, second) == (TickClaim.RUN, TickClaim.ALREADY_RECORDED)
    with db.read() as session:
        assert tick_store.tick_recorded(session, tick) is True
        assert tick_store.tick_recorded(session, tick + timedelta(days=1)) is False
        rows = session.execute(select(ConsolidationTick.__table__)).all()
    # scheduled_for, fired_at, jobs_created, skipped_active, skipped_idle,
    # skipped_paused, schedule_paused, caught_up
    assert [tuple(row) for row in rows] == [
        (tick, tick + timedelta(seconds=1), 0, 0, 0, 0, False, False)
    ]


def test_record_tick_reads_the_schedule_s_pause_and_says_if_caught_up(
    db: DatabaseService,
) -> None:
    paused_tick, later_tick = T0.replace(hour=2), T0.replace(hour=3)
    with db.transaction() as session:
        pause_store.insert_pause(session, at=T0, by="alice", reason=None)
        paused = tick_store.record_tick(session, paused_tick, now=T0, caught_up=True)
        pause_store.delete_pause(session)
        running = tick_store.record_tick(session, later_tick, now=T0)

    assert (paused, running) == (TickClaim.SCHEDULE_PAUSED, TickClaim.RUN)
    with db.read() as session:
        ticks = tick_store.list_ticks(session, limit=10, offset=0)
    assert [(t.scheduled_for, t.schedule_paused, t.caught_up) for t in ticks] == [
        (later_tick, False, False),
        (paused_tick, True, True),
    ]


def test_a_rolled_back_tick_is_not_recorded(db: DatabaseService) -> None:
    tick = T0.replace(hour=2)

    with pytest.raises(RuntimeError), db.transaction() as session:
        assert tick_store.record_tick(session, tick, now=T0) is TickClaim.RUN
        raise RuntimeError("the fan-out failed")

    with db.read() as session:
        assert tick_store.tick_recorded(session, tick) is False
    with db.transaction() as session:
        assert tick_store.record_tick(session, tick, now=T0) is TickClaim.RUN


def test_set_tick_outcome(db: DatabaseService) -> None:
    tick, other = T0.replace(hour=2), T0.replace(hour=3)
    with db.transaction() as session:
        tick_store.record_tick(session, tick, now=T0)
        tick_store.record_tick(session, other, now=T0)
        tick_store.set_tick_outcome(
            session, tick, created=17, skipped_active=3, skipped_idle=980, skipped_paused=4
        )

    with db.read() as session:
        rows = session.execute(
            select(
                ConsolidationTick.scheduled_for,
                ConsolidationTick.jobs_created,
                ConsolidationTick.skipped_active,
                ConsolidationTick.skipped_idle,
                ConsolidationTick.skipped_paused,
            ).order_by(ConsolidationTick.scheduled_for)
        ).all()
    assert [tuple(row) for row in rows] == [(tick, 17, 3, 980, 4), (other, 0, 0, 0, 0)]


def test_count_projects_with_active_job_counts_active_projects_not_paused_only(
    db: DatabaseService, factories: Factories
) -> None:
    pending, running, finished, _idle = factories.projects(4)
    (inactive,) = factories.projects(1, is_active=False)
    paused = factories.project(paused_at=T0, paused_by="alice").id
    factories.job(pending)
    factories.job(running, status=JobStatus.RUNNING)
    factories.job(finished, status=JobStatus.COMPLETED)
    factories.job(inactive)
    factories.job(paused)

    with db.read() as session:
        assert job_store.count_projects_with_active_job(session) == 2


def test_set_claimable_at_gives_each_job_its_own(db: DatabaseService, factories: Factories) -> None:
    first, second = (factories.job(project).id for project in factories.projects(2))

    with db.transaction() as session:
        job_store.set_claimable_at(session, {first: T0, second: T0 + timedelta(hours=1)})

    assert _row(db, first)["claimable_at"] == T0
    assert _row(db, second)["claimable_at"] == T0 + timedelta(hours=1)


# --- reading jobs ------------------------------------------------------------------------


def test_get_job(db: DatabaseService, factories: Factories) -> None:
    project = factories.project()
    job = factories.job(project.id, triggered_by="alice")

    with db.read() as session:
        found = job_store.get_job(session, job.id)
        with pytest.raises(JobNotFound) as missing:
            job_store.get_job(session, job.id + 1)

    assert (found.id, found.project_id, found.triggered_by) == (job.id, project.id, "alice")
    assert missing.value.job_id == job.id + 1


def _listed(db: DatabaseService, project_id: uuid.UUID | None, **kwargs: Any) -> list[int]:
    with db.read() as session:
        return [job.id for job in job_store.list_jobs(session, project_id, **kwargs)]


def test_list_jobs_newest_first_with_filters_and_pages(
    db: DatabaseService, factories: Factories
) -> None:
    a, b = factories.projects(2)
    a1 = factories.job(a, status=JobStatus.COMPLETED).id
    b1 = factories.job(b, status=JobStatus.COMPLETED).id
    a2 = factories.job(a, status=JobStatus.FAILED).id
    b2 = factories.job(b, status=JobStatus.RUNNING).id
    a3 = factories.job(a, status=JobStatus.PENDING).id

    assert _listed(db, None) == [a3, b2, a2, b1, a1]
    assert _listed(db, a) == [a3, a2, a1]
    assert _listed(db, b) == [b2, b1]
    assert _listed(db, None, status=JobStatus.COMPLETED) == [b1, a1]
    assert _listed(db, a, status=JobStatus.COMPLETED) == [a1]
    assert _listed(db, b, status=JobStatus.PENDING) == []
    assert _listed(db, None, limit=2) == [a3, b2]
    assert _listed(db, None, limit=2, offset=2) == [a2, b1]
    assert _listed(db, None, limit=2, offset=4) == [a1]
    assert _listed(db, None, limit=2, offset=5) == []
    assert _listed(db, a, limit=1, offset=1) == [a2]
    assert _listed(db, uuid.uuid4()) == []


def test_count_active_jobs_by_status(db: DatabaseService, factories: Factories) -> None:
    with db.read() as session:
        assert job_store.count_active_jobs(session) == {JobStatus.PENDING: 0, JobStatus.RUNNING: 0}
    project_ids = factories.projects(7)
    factories.job(project_ids[0])
    factories.job(project_ids[1])
    factories.job(project_ids[2], status=JobStatus.RUNNING, started_at=T0)
    for project_id, status in zip(project_ids[3:], FINISHED_STATUSES, strict=True):
        factories.job(project_id, status=status)

    with db.read() as session:
        counts = job_store.count_active_jobs(session)

    assert counts == {JobStatus.PENDING: 2, JobStatus.RUNNING: 1}


def test_a_dead_task_without_a_recorded_error_still_fails_its_job(
    db: DatabaseService, factories: Factories, clock: FakeClock
) -> None:
    job = _queued_job(db, factories, clock)
    with db.transaction() as session:
        session.execute(
            update(QueuedTask).values(state=TaskState.DEAD, last_error=None, finished_at=T0)
        )

    with db.transaction() as session:
        dead_task = TaskQueueService.dead_task(CONSOLIDATION_TASK, job_store.job_task_id_sql())
        failed = job_store.fail_active_jobs(session, dead_task=dead_task, now=T0)

    assert failed == [(job.id, job.project_id)]
    assert _row(db, job.id)["error"] == "queue gave up: no error recorded"
