"""The SQL of `task_memories`: writing a memory, counting a project's backlog, and
reading and marking memories for consolidation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    ScalarSelect,
    Select,
    bindparam,
    false,
    func,
    insert,
    select,
    text,
    union,
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


def projects_with_work(at: datetime) -> CompoundSelect[Any]:
    """The projects the nightly run has something to do for at `at`: unconsolidated
    memories, or a consolidated memory whose tier expired with its age. Both read
    only partial indexes, so the cost follows the memories to do, not all memories."""
    unconsolidated = select(TaskMemory.project_id).where(TaskMemory.is_consolidated == false())
    tier_expired = select(TaskMemory.project_id).where(
        TaskMemory.tier_expires_at.is_not(None), TaskMemory.tier_expires_at <= at
    )
    return union(unconsolidated, tier_expired)


# What re-tiering a consolidated memory needs besides scoring it.
STANDING_COLUMNS: tuple[Any, ...] = (
    TaskMemory.is_consolidated,
    TaskMemory.tier,
    TaskMemory.tier_expires_at,
)


def project_scoring_rows(project_id: uuid.UUID) -> Select[Any]:
    """Every memory of the project, as scoring needs it (for the tier cutoffs) and as
    re-tiering the consolidated ones needs it."""
    return select(*SCORING_COLUMNS, *STANDING_COLUMNS).where(TaskMemory.project_id == project_id)


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


@dataclass
class Marks:
    """Memories' new scores, tiers and tier expiries, column by column (as the database
    wants them)."""

    ids: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tiers: list[MemoryTier] = field(default_factory=list)
    expiries: list[datetime | None] = field(default_factory=list)

    def add(self, memory_id: int, score: float, tier: MemoryTier, expiry: datetime | None) -> None:
        self.ids.append(memory_id)
        self.scores.append(score)
        self.tiers.append(tier)
        self.expiries.append(expiry)

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, size: int) -> list[Marks]:
        return [
            Marks(
                self.ids[i : i + size],
                self.scores[i : i + size],
                self.tiers[i : i + size],
                self.expiries[i : i + size],
            )
            for i in range(0, len(self.ids), size)
        ]


_TIER_COLUMNS = "consolidation_score = v.score, tier = v.tier, tier_expires_at = v.expires_at"
_UNNEST_MARKS = (
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:scores AS double precision[]), "
    "CAST(:tiers AS varchar[]), CAST(:expiries AS timestamptz[])) "
    "AS v(id, score, tier, expires_at) WHERE m.id = v.id"
)

# PostgreSQL: one statement per batch, the batch passed as arrays.
_MARK_ALL_POSTGRES = text(
    f"UPDATE task_memories AS m SET {_TIER_COLUMNS}, is_consolidated = true, "
    f"consolidated_at = :now, consolidation_job_id = :job_id {_UNNEST_MARKS}"
).bindparams(bindparam("now", type_=UTCDateTime()))
_RETIER_ALL_POSTGRES = text(f"UPDATE task_memories AS m SET {_TIER_COLUMNS} {_UNNEST_MARKS}")

# Elsewhere (SQLite, in process): one statement executed for each memory.
_RETIER = (
    update(_memories)
    .where(_memories.c.id == bindparam("memory_id"))
    .values(
        consolidation_score=bindparam("score"),
        tier=bindparam("tier"),
        tier_expires_at=bindparam("expires_at"),
    )
)
_MARK = _RETIER.values(
    is_consolidated=True,
    consolidated_at=bindparam("now"),
    consolidation_job_id=bindparam("job_id"),
)


def mark_consolidated(session: Session, marks: Marks, *, now: datetime, job_id: int) -> None:
    """Store a batch's scores and tiers and mark its memories consolidated by `job_id`."""
    _write(session, marks, _MARK_ALL_POSTGRES, _MARK, {"now": now, "job_id": job_id})


def retier(session: Session, marks: Marks) -> None:
    """Store consolidated memories' new scores, tiers and tier expiries."""
    _write(session, marks, _RETIER_ALL_POSTGRES, _RETIER, {})


def _write(
    session: Session, marks: Marks, all_at_once: Any, one_by_one: Any, common: dict[str, Any]
) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        columns = {
            "ids": marks.ids,
            "scores": marks.scores,
            "tiers": [tier.value for tier in marks.tiers],
            "expiries": marks.expiries,
        }
        connection.execute(all_at_once, columns | common)
        return
    connection.execute(
        one_by_one,
        [
            {"memory_id": i, "score": score, "tier": tier, "expires_at": expiry} | common
            for i, score, tier, expiry in zip(
                marks.ids, marks.scores, marks.tiers, marks.expiries, strict=True
            )
        ],
    )
