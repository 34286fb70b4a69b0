"""`omoi-os worker` with OMOI_WORKER_METRICS_PORT: the process serves its own metrics,
so the jobs it finishes are counted where a scraper can read them; a port it cannot
bind stops it, in one line, before any job is taken."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from omoi_os.config import AppSettings
from omoi_os.models import JobStatus
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from tests.support.factories import Factories
from tests.support.polling import wait_for
from tests.support.rows import stored_job
from tests.support.servers import OMOI_OS, cli_env, free_port, run_cli

COMPLETED = ("omoi_consolidation_jobs_finished_total", (("status", "completed"),))


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples at `url`; empty while nothing answers there yet."""
    try:
        exposition = httpx.get(url, timeout=2).text
    except httpx.TransportError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def test_the_worker_serves_its_metrics(
    db: DatabaseService, factories: Factories, tmp_path: Path
) -> None:
    project = factories.project()
    factories.memories(project.id, 3)
    settings = AppSettings(database_url=db.url)
    job_id = ConsolidationTriggerService(db, settings=settings).trigger_consolidation_sync(
        project.id
    )
    env = cli_env(tmp_path, database_url=db.url, worker_poll_interval="0.05")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy_port = taken.getsockname()[1]
        refused = run_cli("worker", env=env | {"OMOI_WORKER_METRICS_PORT": str(busy_port)})
    assert (refused.returncode, refused.stderr) == (
        2,
        f"omoi-os: error: cannot serve worker metrics on 127.0.0.1:{busy_port}: "
        "Address already in use\n",
    )
    assert stored_job(db, job_id).status is JobStatus.PENDING  # no worker ever started

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    worker = subprocess.Popen(
        [OMOI_OS, "worker"],
        env=env | {"OMOI_WORKER_METRICS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _scrape(url).get(COMPLETED) == 1.0, what="the job counted by the worker")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=30)

    assert worker.returncode == 0, errors
    assert f"worker metrics on {url}" in errors
    assert stored_job(db, job_id).status is JobStatus.COMPLETED
