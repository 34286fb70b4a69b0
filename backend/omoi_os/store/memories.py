"""The SQL of `task_memories`: writing a memory, counting a project's backlog, and
reading and marking memories for consolidation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    bindparam,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from omoi_os.models import MemoryTier, MemoryType, TaskMemory
from omoi_os.models.base import UTCDateTime, cast_table

_memories = cast_table(TaskMemory)

# What scoring a memory needs, in the order the runner unpacks it.
SCORING_COLUMNS = (
    TaskMemory.id,
    TaskMemory.memory_type,
    TaskMemory.reused_count,
    TaskMemory.learned_at,
    TaskMemory.success,
)

_INSERT = insert(_memories).returning(*_memories.c)


def insert_memory(
    session: Session,
    *,
    project_id: uuid.UUID,
    memory_type: MemoryType,
    execution_summary: str,
    success: bool,
    reused_count: int,
    learned_at: datetime,
) -> Any:
    """Insert one unconsolidated memory; returns its row (every column)."""
    values = {
        "project_id": project_id,
        "memory_type": memory_type,
        "execution_summary": execution_summary,
        "success": success,
        "reused_count": reused_count,
        "learned_at": learned_at,
        "is_consolidated": False,
    }
    return session.connection().execute(_INSERT, values).one()


def unconsolidated_count_upto(
    project_id: ColumnElement[Any], limit: ColumnElement[Any]
) -> ScalarSelect[int]:
    """How many unconsolidated memories `project_id` has, counting no further than
    `limit`: a LIMIT inside the count, served by the partial index, so its cost does
    not grow with the backlog."""
    backlog = (
        select(TaskMemory.id)
        .where(TaskMemory.project_id == project_id, TaskMemory.is_consolidated == false())
        .limit(limit)
        .subquery()
    )
    return select(func.count()).select_from(backlog).scalar_subquery()


def project_scoring_rows(project_id: uuid.UUID) -> Select[Any]:
    """Every memory of the project, as scoring needs it (for the tier cutoffs)."""
    return select(*SCORING_COLUMNS[1:]).where(TaskMemory.project_id == project_id)


def next_batch(
    *,
    project_id: uuid.UUID,
    job_id: int,
    after_id: int,
    size: int,
    unconsolidated_only: bool,
    memory_types: Sequence[MemoryType] | None,
    learned_before: datetime | None,
) -> Select[int, MemoryType, int, datetime, bool]:
    """The next `size` memories in a job's scope after `after_id`, by id. Memories this
    job already marked are skipped, so a resumed job never counts one twice."""
    conditions = [
        TaskMemory.project_id == project_id,
        TaskMemory.id > after_id,
        TaskMemory.consolidation_job_id.is_distinct_from(job_id),
    ]
    if unconsolidated_only:
        conditions.append(TaskMemory.is_consolidated == false())
    if memory_types:
        conditions.append(TaskMemory.memory_type.in_(memory_types))
    if learned_before is not None:
        conditions.append(TaskMemory.learned_at <= learned_before)
    return select(*SCORING_COLUMNS).where(*conditions).order_by(TaskMemory.id).limit(size)


def learned_before(now: datetime, min_age_days: int | None) -> datetime | None:
    return None if min_age_days is None else now - timedelta(days=min_age_days)


# PostgreSQL: one statement per batch, the batch passed as three arrays.
_MARK_ALL_POSTGRES = text(
    "UPDATE task_memories AS m SET consolidation_score = v.score, tier = v.tier, "
    "is_consolidated = true, consolidated_at = :now, consolidation_job_id = :job_id "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:scores AS double precision[]), "
    "CAST(:tiers AS varchar[])) AS v(id, score, tier) WHERE m.id = v.id"
).bindparams(bindparam("now", type_=UTCDateTime()))

# Elsewhere (SQLite, in process): one statement executed for each memory of the batch.
_MARK = (
    update(_memories)
    .where(_memories.c.id == bindparam("memory_id"))
    .values(
        consolidation_score=bindparam("score"),
        tier=bindparam("tier"),
        is_consolidated=True,
        consolidated_at=bindparam("now"),
        consolidation_job_id=bindparam("job_id"),
    )
)


def mark_consolidated(
    session: Session,
    *,
    ids: Sequence[int],
    scores: Sequence[float],
    tiers: Sequence[MemoryTier],
    now: datetime,
    job_id: int,
) -> None:
    """Store a batch's scores and tiers and mark its memories consolidated by `job_id`."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        columns = {"ids": list(ids), "scores": list(scores), "tiers": [t.value for t in tiers]}
        connection.execute(_MARK_ALL_POSTGRES, columns | {"now": now, "job_id": job_id})
        return
    connection.execute(
        _MARK,
        [
            {"memory_id": memory_id, "score": score, "tier": tier, "now": now, "job_id": job_id}
            for memory_id, score, tier in zip(ids, scores, tiers, strict=True)
        ],
    )
