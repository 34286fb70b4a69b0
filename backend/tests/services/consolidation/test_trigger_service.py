"""ConsolidationTriggerService, the facade: the task card's verification script, the
scheduler's start and stop as the service exposes them, and the async forms.

The triggers themselves are tested in triggers/, the scheduler in test_scheduler.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from omoi_os.models import TriggerType
from omoi_os.services.database import DatabaseService
from tests.support.consolidation import MakeTriggers
from tests.support.factories import T0, Factories
from tests.support.logs import records
from tests.support.polling import wait_for
from tests.support.rows import stored_jobs
from tests.support.servers import run_python
from tests.support.threads import scheduler_threads

# --- the task card's verification script ----------------------------------------------

VERIFICATION_SCRIPT = """
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService

db = DatabaseService()
trigger_svc = ConsolidationTriggerService(db.get_session())
trigger_svc.start()
print('Scheduler started')
trigger_svc.stop()
print('Scheduler stopped')
"""


@pytest.mark.parametrize("migrated", [True, False], ids=["migrated", "fresh-database"])
def test_task_card_verification_script_runs_verbatim(
    database_url: str, migrated: bool, tmp_path: Any
) -> None:
    backend = Path(__file__).resolve().parents[3]
    settings = {"database_url": database_url} if migrated else {}

    result = run_python(VERIFICATION_SCRIPT, cwd=backend, home=tmp_path, **settings)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Scheduler started", "Scheduler stopped"]
    assert "Traceback" not in result.stderr
    if migrated:
        assert result.stderr == ""


# --- lifecycle ------------------------------------------------------------------------


def test_start_and_stop_are_idempotent_in_any_order(
    make_triggers: MakeTriggers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    triggers = make_triggers()

    triggers.stop()  # never started
    assert records(caplog, "scheduler_stopped") == []
    triggers.start()
    triggers.start()
    assert triggers.running
    triggers.stop()
    triggers.stop()
    assert not triggers.running
    triggers.start()  # and again after a stop
    assert triggers.running
    triggers.stop()

    wait_for(lambda: scheduler_threads() == [], what="the APScheduler threads to end")
    assert len(records(caplog, "scheduler_started")) == 2
    assert len(records(caplog, "scheduler_stopped")) == 2


@pytest.mark.asyncio
async def test_start_inside_a_running_event_loop(
    make_triggers: MakeTriggers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    triggers = make_triggers(consolidation_schedule="0 2 * * *")

    triggers.start()
    try:
        assert triggers.running
        assert triggers.next_run_time() == T0.replace(hour=2) + timedelta(days=1)
        assert [r.schedule for r in records(caplog, "scheduler_started")] == ["0 2 * * * (UTC)"]
    finally:
        await asyncio.to_thread(triggers.stop)

    assert not triggers.running
    assert len(records(caplog, "scheduler_stopped")) == 1


# --- the async forms --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_forms_run_off_the_event_loop(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers
) -> None:
    project = factories.project()
    factories.memories(project.id, 9)
    triggers = make_triggers()
    loop_thread = threading.get_ident()
    seen: dict[str, list[int]] = {"trigger": [], "threshold": []}
    trigger_sync = triggers.trigger_consolidation_sync
    threshold_sync = triggers.check_threshold_triggers_sync

    def trigger_spy(*args: Any) -> int:
        seen["trigger"].append(threading.get_ident())
        return trigger_sync(*args)

    def threshold_spy(project_id: uuid.UUID | str) -> int | None:
        seen["threshold"].append(threading.get_ident())
        return threshold_sync(project_id)

    triggers.trigger_consolidation_sync = trigger_spy  # type: ignore[method-assign]
    triggers.check_threshold_triggers_sync = threshold_spy  # type: ignore[method-assign]

    assert await triggers.check_threshold_triggers(project.id) is None  # 9 < 10
    job_id = await triggers.trigger_consolidation(project.id, TriggerType.MANUAL)

    assert [job.id for job in stored_jobs(db)] == [job_id]
    assert len(seen["trigger"]) == 1 and len(seen["threshold"]) == 1
    assert loop_thread not in seen["trigger"] + seen["threshold"]
