"""A write storm: 64 clients writing memories into one project for 30 s. Nothing is
lost, and at every sampled instant the project has at most one active job."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from omoi_os.config import AppSettings
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.testing import libpq_url
from tests.faults.queries import AUTH, replica_env, scalar
from tests.support.factories import Factories
from tests.support.polling import wait_for
from tests.support.servers import Server, serve

pytestmark = [pytest.mark.fault, pytest.mark.postgres_only]


# --- 4. a threshold storm -----------------------------------------------------------------------


def test_a_write_storm_loses_nothing_and_never_doubles_a_job(
    postgres_url: str, tmp_path: Path
) -> None:
    db = DatabaseService(postgres_url)
    project = Factories(db).project()
    env = replica_env(
        tmp_path,
        postgres_url,
        consolidation_threshold="100",
        consolidation_cooldown="0",
        worker_concurrency="2",
    )
    stop = threading.Event()
    accepted: list[int] = []
    failures: list[int] = []
    most_active = [0]

    def client_loop(server: Server) -> None:
        body = {"memory_type": "learning", "execution_summary": "storm"}
        with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=30) as client:
            while not stop.is_set():
                status = client.post(
                    f"/api/v1/projects/{project.id}/memories", json=body
                ).status_code
                (accepted if status == 201 else failures).append(status)

    def watch_active() -> None:
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM consolidation_jobs WHERE status IN ('pending', 'running')"
                ).fetchone()
                most_active[0] = max(most_active[0], int(row[0]) if row else 0)
                time.sleep(0.02)

    with serve(env) as server:
        threads = [threading.Thread(target=client_loop, args=(server,)) for _ in range(64)]
        threads.append(threading.Thread(target=watch_active))
        for thread in threads:
            thread.start()
        time.sleep(30)
        stop.set()
        for thread in threads:
            thread.join(60)
        # The tail below the threshold is consolidated by one last manual trigger.
        wait_for(
            lambda: (
                scalar(
                    postgres_url,
                    "SELECT count(*) FROM consolidation_jobs "
                    "WHERE status IN ('pending', 'running')",
                )
                == 0
            ),
            timeout=60,
            what="the storm's last job",
        )
        triggers = ConsolidationTriggerService(db, settings=AppSettings(database_url=postgres_url))
        triggers.trigger_consolidation_sync(project.id)
        wait_for(
            lambda: (
                scalar(postgres_url, "SELECT count(*) FROM task_memories WHERE NOT is_consolidated")
                == 0
            ),
            timeout=60,
            what="every memory consolidated",
        )
    db.dispose()

    stored = scalar(postgres_url, "SELECT count(*) FROM task_memories")
    assert failures == []
    assert len(accepted) > 1000
    assert stored == len(accepted)  # count in = count stored
    assert most_active[0] == 1  # at every sampled instant, at most one active job
    jobs = scalar(
        postgres_url, "SELECT count(*) FROM consolidation_jobs WHERE trigger_type = 'threshold'"
    )
    assert jobs >= 2
    assert (
        scalar(postgres_url, "SELECT count(*) FROM consolidation_jobs WHERE status <> 'completed'")
        == 0
    )
