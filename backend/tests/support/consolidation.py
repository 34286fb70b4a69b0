"""What the consolidation tests share: a trigger service made by the `make_triggers`
fixture (services/consolidation/conftest.py), its trigger counter, and standing in for
the parts around it: writers adding memories, the worker ending a job."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update

from omoi_os.models import ConsolidationJob, JobStatus, MemoryType, TaskMemory
from omoi_os.services.consolidation.decisions import starts_cooldown
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService, NewMemory
from omoi_os.store import projects as project_store
from omoi_os.store.sql import execute_counting

MakeTriggers = Callable[..., ConsolidationTriggerService]

LESSON = NewMemory(memory_type=MemoryType.LEARNING, execution_summary="lesson")


def trigger_count(triggers: ConsolidationTriggerService, trigger_type: str, outcome: str) -> float:
    """omoi_consolidation_triggers_total for this trigger type and outcome."""
    value = triggers.metrics.registry.get_sample_value(
        "omoi_consolidation_triggers_total", {"trigger_type": trigger_type, "outcome": outcome}
    )
    return value or 0.0


def write_memories(
    memories: MemoryService, project_id: uuid.UUID, count: int, note: NewMemory = LESSON
) -> list[int | None]:
    """Write `note` `count` times, as a client does; the job each write started, if any."""
    return [memories.create_memory_sync(project_id, note).triggered_job_id for _ in range(count)]


def finish_job(
    db: DatabaseService,
    job_id: int,
    when: datetime,
    *,
    status: JobStatus = JobStatus.COMPLETED,
    consolidate: bool = False,
) -> None:
    """Stand in for the worker: the job ended in `status` at `when` (and, with
    `consolidate`, consolidated every memory), starting the project's cooldown as the
    worker would (decisions.starts_cooldown)."""
    with db.transaction() as session:
        job = session.get(ConsolidationJob, job_id)
        assert job is not None
        job.status, job.started_at, job.finished_at = status, when, when
        consolidated = 0
        if consolidate:
            marked = update(TaskMemory).values(is_consolidated=True, consolidated_at=when)
            consolidated = execute_counting(session, marked)
        if starts_cooldown(status, consolidated):
            project_store.start_cooldown(session, [job.project_id], at=when)
