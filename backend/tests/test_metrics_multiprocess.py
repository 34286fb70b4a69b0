"""metrics.py under several worker processes (PROMETHEUS_MULTIPROC_DIR): real separate
processes count triggers on one database, and a scrape from yet another process sums
them exactly while serving the database gauges once; without the variable nothing is
written to any file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.factories import Factories

BACKEND = Path(__file__).resolve().parents[1]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _environment(multiproc_dir: Path | None) -> dict[str, str]:
    """Ours minus every OMOI_* and prometheus variable, plus the directory if given."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OMOI_", "PROMETHEUS_", "prometheus_"))
    }
    env["PYTHONPATH"] = str(BACKEND)
    if multiproc_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    return env


def _start(cwd: Path, multiproc_dir: Path | None, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.support.metrics_process", *args]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=_environment(multiproc_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _results(*processes: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Each process's printed JSON, once all have ended (AssertionError naming a failure)."""
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    return [json.loads(out) for out, _ in outputs]


def _samples(exposition: str, prefix: str = "omoi_") -> Samples:
    """Every sample (bucket samples left out) of the families named `prefix…`."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name.startswith(prefix)
        for sample in family.samples
        if not sample.name.endswith("_bucket")
    }


def _trigger(trigger_type: str, outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = (("outcome", outcome), ("trigger_type", trigger_type))
    return ("omoi_consolidation_triggers_total", labels)


# Two counting processes, three runtimes: 4 manual jobs created, 1 manual trigger that
# found its project's job active, 1 threshold check (timed) of a project with no memory.
SUMMED: Samples = {
    _trigger("manual", "created"): 4.0,
    _trigger("manual", "skipped_active"): 1.0,
    _trigger("threshold", "skipped_below_threshold"): 1.0,
    ("omoi_consolidation_threshold_check_seconds_count", ()): 1.0,
    ("omoi_consolidation_tick_fanout_seconds_count", ()): 0.0,
    ("omoi_consolidation_tick_fanout_seconds_sum", ()): 0.0,
    ("omoi_database_up", ()): 1.0,
    ("omoi_consolidation_jobs", (("status", "pending"),)): 4.0,
    ("omoi_consolidation_jobs", (("status", "running"),)): 0.0,
    (
        "omoi_task_queue_depth",
        (("state", "queued"), ("task_type", "consolidation")),
    ): 4.0,
}
# Measured on the wall clock: a duration, and how long the oldest task has waited.
CHECK_SECONDS = ("omoi_consolidation_threshold_check_seconds_sum", ())
WAITED = ("omoi_consolidation_oldest_claimable_seconds", ())


def _counting_steps(projects: list[uuid.UUID]) -> tuple[list[str], list[str]]:
    """The first process's two runtimes interleave (each would overwrite the other's
    values in the process's one file, were they not shared); the second has one."""
    p = [str(project) for project in projects]
    first = [f"0:manual:{p[0]}", f"1:manual:{p[1]}", f"0:manual:{p[2]}", f"1:manual:{p[0]}"]
    second = [f"0:manual:{p[3]}", f"0:threshold:{p[3]}"]
    return first, second


def test_a_scrape_sums_the_counters_of_every_process_and_serves_the_gauges_once(
    database_url: str, factories: Factories, tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    first_steps, second_steps = _counting_steps(factories.projects(4))

    first, second = _results(
        _start(tmp_path, directory, "count", database_url, *first_steps),
        _start(tmp_path, directory, "count", database_url, *second_steps),
    )
    (scraped,) = _results(_start(tmp_path, directory, "scrape", database_url))

    assert (first["value_class"], second["value_class"]) == ("MmapedValue", "MmapedValue")
    assert scraped["status"] == 200
    texts = scraped["texts"]
    for name in ("route", "collector", "host_multiprocess"):
        samples = _samples(texts[name])
        check_seconds, waited = samples.pop(CHECK_SECONDS), samples.pop(WAITED)
        assert samples == SUMMED, name
        assert (check_seconds > 0, waited >= 0) == (True, True), name
    # Our route and collector serve our families only; the host's own collector
    # serves its counter beside ours, each family once.
    assert _samples(texts["collector"], "host_") == {}
    assert _samples(texts["host_multiprocess"], "host_") == {("host_requests_total", ()): 7.0}
    for text in texts.values():
        assert text.count("# TYPE omoi_consolidation_triggers_total counter") == 1
        assert text.count("# TYPE omoi_consolidation_jobs gauge") == 1
    # Counters and histograms, one file each per process; the gauges are in none.
    pids = (first["pid"], second["pid"], scraped["pid"])
    expected_files = {f"{kind}_{pid}.db" for kind in ("counter", "histogram") for pid in pids}
    assert {path.name for path in directory.iterdir()} == expected_files


def test_without_the_directory_nothing_is_written_and_runtimes_keep_their_own_counts(
    database_url: str, factories: Factories, tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    first_steps, _ = _counting_steps(factories.projects(4))

    (result,) = _results(_start(cwd, None, "count", database_url, *first_steps))

    assert result["value_class"] == "MutexValue"
    assert result["mapped_metric_files"] == []
    assert list(cwd.iterdir()) == []
    assert result["runtimes"] == {
        "0": {"manual_created": 2.0, "threshold_checks": 0.0},
        "1": {"manual_created": 1.0, "threshold_checks": 0.0},
    }
