"""The OpenAPI schema says exactly what the code does: schemathesis, every phase
(examples, coverage, fuzzing, stateful) and every check, against a real `omoi-os
serve` on each database, finds nothing. Hosts generate clients from this schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from omoi_os.api import create_app
from omoi_os.config import AppSettings
from tests.support.servers import cli_env, serve

TOKEN = "contract-token-0123456789abcdef"
SCHEMATHESIS = str(Path(sys.executable).parent / "st")
# Bounded so CI stays within its budget; every phase and check still runs.
MAX_EXAMPLES = "10"
# Every warning but missing_test_data: retry succeeds only on a failed job and cancel
# only on an active one, which generated requests cannot arrange, so those two answer
# 404 or 409 to every well-formed request here (tests/api/routes/test_jobs.py covers
# their success). Auth refused, validation mismatches and the rest still fail the run.
WARNINGS = ",".join(
    (
        "missing_auth",
        "base_url_mismatch",
        "validation_mismatch",
        "missing_deserializer",
        "unused_openapi_auth",
        "unsupported_regex",
        "method_not_allowed",
        "constants_extraction",
        "unmatched_filter",
        "unresolvable_reference",
        "low_valid_rate",
        "rate_limited",
        "dictionary_mismatch",
        "timeout_units",
    )
)


def test_the_schema_covers_every_operation() -> None:
    app = create_app(AppSettings(database_url="sqlite://", api_tokens=f"c:{TOKEN}"))  # type: ignore[arg-type]
    paths = app.openapi()["paths"]

    operations = sorted(f"{method.upper()} {path}" for path in paths for method in paths[path])

    assert operations == [
        "DELETE /api/v1/consolidation/schedule/pause",
        "DELETE /api/v1/projects/{project_id}/pause",
        "GET /api/v1/consolidation-jobs",
        "GET /api/v1/consolidation-jobs/{job_id}",
        "GET /api/v1/consolidation/schedule",
        "GET /api/v1/consolidation/ticks",
        "GET /api/v1/memories/{memory_id}",
        "GET /api/v1/projects",
        "GET /api/v1/projects/{project_id}",
        "GET /api/v1/projects/{project_id}/consolidation-jobs",
        "GET /api/v1/projects/{project_id}/memories",
        "GET /healthz",
        "GET /metrics",
        "PATCH /api/v1/projects/{project_id}",
        "POST /api/v1/consolidation-jobs/{job_id}/cancel",
        "POST /api/v1/consolidation-jobs/{job_id}/retry",
        "POST /api/v1/projects",
        "POST /api/v1/projects/{project_id}/consolidation-jobs",
        "POST /api/v1/projects/{project_id}/memories",
        "PUT /api/v1/consolidation/schedule/pause",
        "PUT /api/v1/projects/{project_id}/pause",
    ]


def test_every_phase_and_every_check_finds_nothing(database_url: str, tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        database_url=database_url,
        api_tokens=f"contract:{TOKEN}",
        consolidation_threshold="10",
        worker_poll_interval="0.2",
    )
    with serve(env) as server:
        run = subprocess.run(
            [
                SCHEMATHESIS, "run", f"{server.base_url}/openapi.json",
                "--phases=examples,coverage,fuzzing,stateful", "--checks=all",
                f"--max-examples={MAX_EXAMPLES}", "--seed=20261127", "--no-color",
                f"--warnings={WARNINGS}",
                "-H", f"Authorization: Bearer {TOKEN}",
            ],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip

    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "No issues found" in report, report  # not even a warning (e.g. auth refused)
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report
