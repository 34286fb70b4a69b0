"""A deploy in the middle of a job: SIGTERM stops the old replica within its bound,
its job is handed back after the batch in progress, and the new replica finishes it
without counting a memory twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from omoi_os.config import AppSettings
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from tests.faults.queries import replica_env, scalar
from tests.support.factories import Factories
from tests.support.polling import wait_for
from tests.support.servers import serve

pytestmark = [pytest.mark.fault, pytest.mark.postgres_only]


# --- 5. a deploy in the middle of a job -----------------------------------------------------------


def test_sigterm_mid_job_stops_in_time_and_another_replica_finishes_it(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    factories = Factories(db)
    project = factories.project()
    factories.memories(project.id, 40_000)
    env = replica_env(tmp_path, postgres_url, worker_batch_size="20")
    triggers = ConsolidationTriggerService(db, settings=AppSettings(database_url=postgres_url))
    try:
        job_id = triggers.trigger_consolidation_sync(project.id)
    finally:
        db.dispose()  # even on failure: no connection is left for a later test's GC

    with serve(env, check_exit=False) as old:
        wait_for(
            lambda: (
                scalar(postgres_url, "SELECT count(*) FROM task_memories WHERE is_consolidated")
                >= 1000
            ),
            timeout=30,
            what="the job under way",
        )
        with serve(env) as new:
            stopped_in = old.stop(timeout=30)
            assert old.process.returncode in (0, -signal.SIGTERM), old.output()
            wait_for(
                lambda: (
                    scalar(
                        postgres_url,
                        "SELECT status FROM consolidation_jobs WHERE id = %s",
                        (job_id,),
                    )
                    == "completed"
                ),
                timeout=120,
                what="the job completed by the new replica",
            )
            handed_back = "handed back" in old.output()
            new_output = new.output()

    assert stopped_in < 15
    assert handed_back
    assert f"job {job_id} of project {project.id}: running" in new_output
    assert scalar(postgres_url, "SELECT count(*) FROM task_memories WHERE NOT is_consolidated") == 0
    result = scalar(postgres_url, "SELECT result FROM consolidation_jobs WHERE id = %s", (job_id,))
    assert result["memories_processed"] == 40_000  # resumed, nothing counted twice
    assert (
        scalar(postgres_url, "SELECT count(*) FROM consolidation_jobs WHERE status = 'running'")
        == 0
    )
