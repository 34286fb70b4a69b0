"""The consolidation-jobs routes (api/routes/jobs.py): the manual trigger, reading
and listing jobs, and their errors (409 naming the active job, 422 naming the field,
404), none of which writes anything."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from omoi_os.models import ConsolidationJob, JobStatus
from omoi_os.store.jobs import CONSOLIDATION_TASK, task_id_for_job
from tests.support.api import AUTH, BOB, create_project
from tests.support.factories import T0, Factories
from tests.support.logs import one, records
from tests.support.rows import row_counts, stored_job

# --- the manual trigger ---------------------------------------------------------------------


def test_manual_trigger_records_the_principal_and_scope(
    client: TestClient, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os")
    project = create_project(client)

    response = client.post(
        f"/api/v1/projects/{project['id']}/consolidation-jobs",
        json={"scope": {"memory_types": ["decision"], "min_age_days": 3}},
        headers=BOB,
    )

    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["project_id"], job["trigger_type"], job["status"], job["triggered_by"]) == (
        project["id"],
        "manual",
        "pending",
        "bob",
    )
    assert job["scope"] == {
        "memory_types": ["decision"],
        "min_age_days": 3,
        "unconsolidated_only": True,
        "dry_run": False,
    }
    assert (job["started_at"], job["finished_at"], job["result"], job["error"]) == (
        None,
        None,
        None,
        None,
    )
    read = client.get(f"/api/v1/consolidation-jobs/{job['id']}", headers=AUTH)
    assert (read.status_code, read.json()) == (200, job)
    created = one(caplog, "job_created")
    assert (created.job_id, created.trigger_type, created.triggered_by) == (  # type: ignore[attr-defined]
        job["id"],
        "manual",
        "bob",
    )
    assert [(row.task_type, row.task_id) for row in factories.queue_rows()] == [
        (CONSOLIDATION_TASK, task_id_for_job(job["id"]))
    ]
    assert row_counts(factories) == (1, 0, 1, 1)


def test_manual_trigger_without_a_body(client: TestClient, factories: Factories) -> None:
    project = create_project(client)

    response = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH)

    assert response.status_code == 202, response.text
    assert (response.json()["scope"], response.json()["triggered_by"]) == (
        {"unconsolidated_only": True, "dry_run": False},
        "alice",
    )
    assert row_counts(factories) == (1, 0, 1, 1)


def test_conflicts_name_the_active_job_and_write_nothing(
    client: TestClient, factories: Factories, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omoi_os")
    project = create_project(client)
    inactive = create_project(client, is_active=False)
    first = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH)
    assert first.status_code == 202, first.text
    before = row_counts(factories)

    again = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH)
    dormant = client.post(f"/api/v1/projects/{inactive['id']}/consolidation-jobs", headers=AUTH)

    assert again.status_code == 409
    assert again.json() == {
        "detail": f"project {project['id']} already has active consolidation job "
        f"{first.json()['id']}",
        "active_job_id": first.json()["id"],
    }
    assert dormant.status_code == 409
    assert dormant.json() == {
        "detail": f"project {inactive['id']} is inactive",
        "active_job_id": None,
    }
    assert before == (2, 0, 1, 1)
    assert row_counts(factories) == before
    refused = records(caplog, "trigger_refused")
    assert [(r.outcome, r.project_id) for r in refused] == [  # type: ignore[attr-defined]
        ("skipped_active", project["id"]),
        ("rejected", inactive["id"]),
    ]
    assert len(records(caplog, "job_created")) == 1


# --- reading and listing jobs ---------------------------------------------------------------


def test_job_list_is_newest_first_filtered_and_paginated(
    client: TestClient, factories: Factories
) -> None:
    project = create_project(client)
    other = create_project(client, name="other")
    created = []
    for _ in range(5):
        response = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH)
        assert response.status_code == 202, response.text
        created.append(response.json()["id"])
        with factories.db.transaction() as session:
            session.execute(
                update(ConsolidationJob)
                .where(ConsolidationJob.id == created[-1])
                .values(status=JobStatus.COMPLETED)
            )
    elsewhere = client.post(f"/api/v1/projects/{other['id']}/consolidation-jobs", headers=AUTH)
    assert elsewhere.status_code == 202, elsewhere.text
    url = f"/api/v1/projects/{project['id']}/consolidation-jobs"

    everything = client.get(url, headers=AUTH).json()
    first = client.get(url, params={"limit": 2}, headers=AUTH).json()
    middle = client.get(url, params={"limit": 2, "offset": 2}, headers=AUTH).json()
    last = client.get(url, params={"limit": 2, "offset": 4}, headers=AUTH).json()
    beyond = client.get(url, params={"offset": 5}, headers=AUTH).json()
    pending = client.get(url, params={"status": "pending"}, headers=AUTH).json()
    completed = client.get(url, params={"status": "completed"}, headers=AUTH).json()

    newest_first = created[::-1]
    assert [job["id"] for job in everything["items"]] == newest_first
    assert (everything["limit"], everything["offset"], everything["next_offset"]) == (50, 0, None)
    assert ([job["id"] for job in first["items"]], first["next_offset"]) == (newest_first[:2], 2)
    assert ([job["id"] for job in middle["items"]], middle["next_offset"]) == (
        newest_first[2:4],
        4,
    )
    assert ([job["id"] for job in last["items"]], last["next_offset"]) == ([created[0]], None)
    assert (beyond["items"], beyond["next_offset"]) == ([], None)
    assert pending["items"] == []
    assert [job["id"] for job in completed["items"]] == newest_first
    with factories.db.read() as session:
        statuses = dict(session.execute(select(ConsolidationJob.id, ConsolidationJob.status)).all())
    assert statuses == dict.fromkeys(created, JobStatus.COMPLETED) | {
        elsewhere.json()["id"]: JobStatus.PENDING
    }


def test_jobs_of_every_project_newest_first_by_status_and_trigger_type(
    client: TestClient, factories: Factories
) -> None:
    first, second = create_project(client), create_project(client, name="second")
    paused = client.put(f"/api/v1/projects/{second['id']}/pause", headers=AUTH)
    assert paused.status_code == 200, paused.text
    manual = [
        client.post(f"/api/v1/projects/{p['id']}/consolidation-jobs", headers=AUTH).json()
        for p in (first, second)
    ]
    with factories.db.transaction() as session:
        session.execute(
            update(ConsolidationJob)
            .where(ConsolidationJob.id == manual[0]["id"])
            .values(status=JobStatus.COMPLETED)
        )
    scheduled = factories.job(uuid.UUID(first["id"]), trigger_type="scheduled", scheduled_for=T0)

    def ids(**params: Any) -> list[int]:
        response = client.get("/api/v1/consolidation-jobs", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["items"]]

    assert ids() == [scheduled.id, manual[1]["id"], manual[0]["id"]]
    assert ids(status="pending") == [scheduled.id, manual[1]["id"]]
    assert ids(trigger_type="manual") == [manual[1]["id"], manual[0]["id"]]
    assert ids(status="pending", trigger_type="manual") == [manual[1]["id"]]
    assert ids(status="completed", trigger_type="scheduled") == []
    page = client.get("/api/v1/consolidation-jobs?limit=2", headers=AUTH).json()
    assert (page["limit"], page["offset"], page["next_offset"]) == (2, 0, 2)
    # A manual job made while its project was paused says so.
    assert [job["project_paused"] for job in manual] == [False, True]
    with factories.db.read() as session:
        flags = dict(
            session.execute(select(ConsolidationJob.id, ConsolidationJob.project_paused)).all()
        )
    assert flags == {manual[0]["id"]: False, manual[1]["id"]: True, scheduled.id: False}


# --- errors: each status with its detail, and no rows written ---------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "location"),
    [
        (
            "post",
            "/api/v1/projects/{pid}/consolidation-jobs",
            {"scope": {"everything": True}},
            ["body", "scope", "everything"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/consolidation-jobs",
            {"scope": {"min_age_days": 5000}},
            ["body", "scope", "min_age_days"],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/consolidation-jobs",
            {"scope": {"memory_types": ["rumour"]}},
            ["body", "scope", "memory_types", 0],
        ),
        (
            "post",
            "/api/v1/projects/{pid}/consolidation-jobs",
            {"scope": {}, "priority": "high"},
            ["body", "priority"],
        ),
        ("post", "/api/v1/projects/not-a-uuid/consolidation-jobs", None, ["path", "project_id"]),
        ("get", "/api/v1/consolidation-jobs/abc", None, ["path", "job_id"]),
        ("get", "/api/v1/consolidation-jobs/0", None, ["path", "job_id"]),
        ("get", "/api/v1/consolidation-jobs/99999999999999999999", None, ["path", "job_id"]),
        (
            "get",
            "/api/v1/projects/{pid}/consolidation-jobs?status=sleeping",
            None,
            ["query", "status"],
        ),
        ("get", "/api/v1/projects/{pid}/consolidation-jobs?limit=1000", None, ["query", "limit"]),
        ("get", "/api/v1/projects/{pid}/consolidation-jobs?limit=0", None, ["query", "limit"]),
        ("get", "/api/v1/projects/{pid}/consolidation-jobs?offset=-1", None, ["query", "offset"]),
        ("get", "/api/v1/consolidation-jobs?status=sleeping", None, ["query", "status"]),
        ("get", "/api/v1/consolidation-jobs?trigger_type=cron", None, ["query", "trigger_type"]),
        ("get", "/api/v1/consolidation-jobs?limit=201", None, ["query", "limit"]),
    ],
)
def test_bad_input_gets_422_naming_the_field_and_writes_nothing(
    client: TestClient,
    factories: Factories,
    method: str,
    path: str,
    body: Any,
    location: list[str | int],
) -> None:
    project = create_project(client)
    before = row_counts(factories)

    kwargs: dict[str, Any] = {"headers": AUTH}
    if body is not None:
        kwargs["json"] = body
    response = client.request(method, path.format(pid=project["id"]), **kwargs)

    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [location]
    assert before == (1, 0, 0, 0)
    assert row_counts(factories) == before


def test_not_found_answers(client: TestClient, factories: Factories) -> None:
    missing = uuid.uuid4()

    trigger = client.post(f"/api/v1/projects/{missing}/consolidation-jobs", headers=AUTH)
    listing = client.get(f"/api/v1/projects/{missing}/consolidation-jobs", headers=AUTH)
    job = client.get("/api/v1/consolidation-jobs/424242", headers=AUTH)

    assert (trigger.status_code, trigger.json()) == (
        404,
        {"detail": f"project {missing} does not exist"},
    )
    assert (listing.status_code, listing.json()) == (
        404,
        {"detail": f"project {missing} does not exist"},
    )
    assert (job.status_code, job.json()) == (
        404,
        {"detail": "consolidation job 424242 does not exist"},
    )
    assert row_counts(factories) == (0, 0, 0, 0)


# --- cancel and retry -----------------------------------------------------------------------


def test_cancel_a_pending_job_then_retry_is_refused_and_cancel_again_names_the_status(
    client: TestClient, factories: Factories
) -> None:
    project = create_project(client)
    job = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH).json()

    cancelled = client.post(
        f"/api/v1/consolidation-jobs/{job['id']}/cancel",
        json={"reason": "wrong scope"},
        headers=BOB,
    )
    again = client.post(f"/api/v1/consolidation-jobs/{job['id']}/cancel", headers=AUTH)
    retried = client.post(f"/api/v1/consolidation-jobs/{job['id']}/retry", headers=AUTH)

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["cancelled_by"], body["cancel_reason"]) == (
        "cancelled",
        "bob",
        "wrong scope",
    )
    assert body["cancel_requested_at"] == body["finished_at"] is not None
    assert (again.status_code, again.json()["status"]) == (409, "cancelled")
    assert "only a pending or running job can be cancelled" in again.json()["detail"]
    assert (retried.status_code, retried.json()["status"]) == (409, "cancelled")
    assert [row.state.value for row in factories.queue_rows()] == ["done"]
    assert row_counts(factories) == (1, 0, 1, 1)  # no job was added


def test_cancel_a_running_job_is_202_and_retry_of_a_failed_one_links_it(
    client: TestClient, factories: Factories
) -> None:
    project = create_project(client)
    project_id = uuid.UUID(project["id"])
    running = factories.job(project_id, status=JobStatus.RUNNING)

    stopping = client.post(f"/api/v1/consolidation-jobs/{running.id}/cancel", headers=AUTH)
    with factories.db.transaction() as session:  # its worker ends it, as it would
        session.execute(
            update(ConsolidationJob)
            .where(ConsolidationJob.id == running.id)
            .values(status=JobStatus.FAILED)
        )
    retried = client.post(f"/api/v1/consolidation-jobs/{running.id}/retry", headers=BOB)

    assert stopping.status_code == 202, stopping.text
    assert (stopping.json()["status"], stopping.json()["cancelled_by"]) == ("running", "alice")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["retry_of_id"], retried.json()["triggered_by"]) == (running.id, "bob")
    assert retried.json()["status"] == "pending"


def test_a_second_retry_is_409_naming_the_first_and_the_chain_reads_both_ways(
    client: TestClient, factories: Factories
) -> None:
    project_id = uuid.UUID(create_project(client)["id"])
    failed = factories.job(project_id, status=JobStatus.FAILED, finished_at=T0)

    first = client.post(f"/api/v1/consolidation-jobs/{failed.id}/retry", headers=AUTH)
    second = client.post(f"/api/v1/consolidation-jobs/{failed.id}/retry", headers=BOB)
    original = client.get(f"/api/v1/consolidation-jobs/{failed.id}", headers=AUTH)

    assert first.status_code == 202, first.text
    retry_id = first.json()["id"]
    assert (first.json()["retry_of_id"], first.json()["retried_by_id"]) == (failed.id, None)
    assert (second.status_code, second.json()) == (
        409,
        {
            "detail": f"consolidation job {failed.id} is failed; it was already retried by job "
            f"{retry_id} (retry that one if it failed too)",
            "status": "failed",
            "retry_job_id": retry_id,
        },
    )
    assert original.json()["retried_by_id"] == retry_id
    assert factories.count(ConsolidationJob) == 2


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_cancel_and_retry_of_an_unknown_job_are_404(client: TestClient, action: str) -> None:
    response = client.post(f"/api/v1/consolidation-jobs/987/{action}", headers=AUTH)

    assert (response.status_code, response.json()) == (
        404,
        {"detail": "consolidation job 987 does not exist"},
    )


def test_a_cancel_reason_over_500_characters_is_422_and_writes_nothing(
    client: TestClient, factories: Factories
) -> None:
    project = create_project(client)
    job = client.post(f"/api/v1/projects/{project['id']}/consolidation-jobs", headers=AUTH).json()

    response = client.post(
        f"/api/v1/consolidation-jobs/{job['id']}/cancel", json={"reason": "x" * 501}, headers=AUTH
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "reason"]
    assert stored_job(factories.db, job["id"]).status is JobStatus.PENDING
