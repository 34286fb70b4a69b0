"""JobService on both databases: one job, and pages of jobs newest first."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from omoi_os.errors import JobNotFound, ProjectNotFound
from omoi_os.models import JobStatus, TriggerType
from omoi_os.services.consolidation.job_service import JobPage, JobService
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import TaskQueueService
from tests.support.factories import T0, Factories


@pytest.fixture
def jobs(db: DatabaseService) -> JobService:
    return JobService(db, queue=TaskQueueService())


def _ids(page: JobPage) -> list[int]:
    return [job.id for job in page.items]


def test_get(jobs: JobService, factories: Factories) -> None:
    project = factories.project()
    job = factories.job(
        project.id,
        trigger_type=TriggerType.THRESHOLD,
        status=JobStatus.COMPLETED,
        triggered_by="threshold",
        scope={"dry_run": True},
        started_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=9),
        result={"memories_processed": 3},
    )
    factories.job(project.id)

    found = jobs.get_sync(job.id)

    assert (
        found.id,
        found.project_id,
        found.trigger_type,
        found.status,
        found.triggered_by,
        found.scope,
        found.created_at,
        found.started_at,
        found.finished_at,
        found.result,
        found.error,
    ) == (
        job.id,
        project.id,
        TriggerType.THRESHOLD,
        JobStatus.COMPLETED,
        "threshold",
        {"dry_run": True},
        T0,
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=9),
        {"memories_processed": 3},
        None,
    )


def test_get_an_unknown_job(jobs: JobService, factories: Factories) -> None:
    job = factories.job(factories.project().id)

    with pytest.raises(JobNotFound) as raised:
        jobs.get_sync(job.id + 1)

    assert raised.value.job_id == job.id + 1


def test_list_newest_first_with_filters(jobs: JobService, factories: Factories) -> None:
    a, b = factories.projects(2)
    a1 = factories.job(a, status=JobStatus.COMPLETED).id
    b1 = factories.job(b, status=JobStatus.FAILED).id
    a2 = factories.job(a, status=JobStatus.COMPLETED).id
    b2 = factories.job(b, status=JobStatus.PENDING).id
    a3 = factories.job(a, status=JobStatus.RUNNING).id

    assert _ids(jobs.list_sync()) == [a3, b2, a2, b1, a1]
    assert _ids(jobs.list_sync(project_id=a)) == [a3, a2, a1]
    assert _ids(jobs.list_sync(status=JobStatus.COMPLETED)) == [a2, a1]
    assert _ids(jobs.list_sync(project_id=b, status=JobStatus.PENDING)) == [b2]
    assert _ids(jobs.list_sync(project_id=b, status=JobStatus.COMPLETED)) == []


def test_list_pages(jobs: JobService, factories: Factories) -> None:
    project = factories.project().id
    ids = [factories.job(project, status=JobStatus.COMPLETED).id for _ in range(5)]
    newest_first = ids[::-1]

    first = jobs.list_sync(limit=2)
    second = jobs.list_sync(limit=2, offset=2)
    last = jobs.list_sync(limit=2, offset=4)
    beyond = jobs.list_sync(limit=2, offset=6)

    assert (_ids(first), first.limit, first.offset, first.next_offset) == (
        newest_first[0:2],
        2,
        0,
        2,
    )
    assert (_ids(second), second.offset, second.next_offset) == (newest_first[2:4], 2, 4)
    assert (_ids(last), last.offset, last.next_offset) == (newest_first[4:], 4, None)
    assert (_ids(beyond), beyond.next_offset) == ([], None)


def test_a_full_last_page_has_no_next_offset(jobs: JobService, factories: Factories) -> None:
    a, b = factories.projects(2)
    for _ in range(2):
        factories.job(a, status=JobStatus.COMPLETED)
    ids = [factories.job(b, status=JobStatus.COMPLETED).id for _ in range(4)]

    full = jobs.list_sync(project_id=b, limit=4)
    filtered = jobs.list_sync(project_id=b, limit=2, offset=2)
    everything = jobs.list_sync(limit=6)

    assert (_ids(full), full.next_offset) == (ids[::-1], None)
    assert (_ids(filtered), filtered.next_offset) == (ids[1::-1], None)
    assert (len(everything.items), everything.next_offset) == (6, None)
    assert jobs.list_sync(limit=5).next_offset == 5


def test_list_of_a_project_without_jobs(jobs: JobService, factories: Factories) -> None:
    project = factories.project().id
    factories.job(factories.project().id)

    page = jobs.list_sync(project_id=project)

    assert page == JobPage(items=[], limit=50, offset=0, next_offset=None)


def test_list_of_an_unknown_project(jobs: JobService, factories: Factories) -> None:
    factories.job(factories.project().id)
    unknown = uuid.uuid4()

    with pytest.raises(ProjectNotFound) as raised:
        jobs.list_sync(project_id=unknown)

    assert raised.value.project_id == unknown


def test_list_across_projects_by_status_and_trigger_type(
    jobs: JobService, factories: Factories
) -> None:
    first, second = factories.project().id, factories.project().id
    done = factories.job(first, status=JobStatus.COMPLETED).id
    scheduled = factories.job(
        first, trigger_type=TriggerType.SCHEDULED, scheduled_for=T0, status=JobStatus.FAILED
    ).id
    pending = factories.job(second, trigger_type=TriggerType.THRESHOLD).id

    assert _ids(jobs.list_sync()) == [pending, scheduled, done]
    assert _ids(jobs.list_sync(status=JobStatus.COMPLETED)) == [done]
    assert _ids(jobs.list_sync(trigger_type=TriggerType.MANUAL)) == [done]
    assert _ids(jobs.list_sync(status=JobStatus.FAILED, trigger_type=TriggerType.SCHEDULED)) == [
        scheduled
    ]
    assert _ids(jobs.list_sync(status=JobStatus.FAILED, trigger_type=TriggerType.MANUAL)) == []
