"""The SQL of `task_memories`: writing a memory, counting a project's backlog,
reading and marking memories for consolidation, and reading what it decided."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Float,
    ScalarSelect,
    Select,
    String,
    bindparam,
    cast,
    false,
    func,
    insert,
    literal,
    select,
    true,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, Update

from omoi_os.models import MemoryTier, MemoryType, Project, TaskMemory
from omoi_os.models.base import UTCDateTime, cast_table
from omoi_os.store.sql import Bound

_memories = cast_table(TaskMemory)
_projects = cast_table(Project)

# What scoring a memory needs, in the order the runner unpacks it.
SCORING_COLUMNS = (
    TaskMemory.id,
    TaskMemory.memory_type,
    TaskMemory.reused_count,
    TaskMemory.learned_at,
    TaskMemory.success,
)

_INSERT = insert(_memories).returning(*_memories.c)


def new_memory_values(
    project_id: uuid.UUID,
    *,
    memory_type: MemoryType,
    execution_summary: str,
    success: bool,
    reused_count: int,
    learned_at: datetime,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns of one new, unconsolidated memory."""
    return {
        "project_id": project_id,
        "memory_type": memory_type,
        "execution_summary": execution_summary,
        "success": success,
        "reused_count": reused_count,
        "learned_at": learned_at,
        "metadata": metadata,
        "is_consolidated": False,
    }


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
    values = new_memory_values(
        project_id,
        memory_type=memory_type,
        execution_summary=execution_summary,
        success=success,
        reused_count=reused_count,
        learned_at=learned_at,
    )
    return insert_memory_values(session, values)


def insert_memory_values(session: Session, values: dict[str, Any]) -> Any:
    """Insert the memory new_memory_values made; returns its row (every column)."""
    return session.connection().execute(_INSERT, values).one()


def insert_memory_of_existing_project(values: dict[str, Any]) -> Insert:
    """INSERT of the memory new_memory_values made, RETURNING its id, that inserts
    nothing if its project does not exist: `INSERT … SELECT … FROM projects WHERE id =
    …`. One statement on a host's own session, with no foreign-key error to abort the
    host's transaction when the project is unknown."""
    columns = [_memories.c[name] for name in values]
    row = select(
        *(
            literal(value, type_=column.type)
            for value, column in zip(values.values(), columns, strict=True)
        )
    ).where(_projects.c.id == values["project_id"])
    return insert(_memories).from_select(columns, row).returning(_memories.c.id)


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
        # Correlated with the caller's project row: without this, a statement over
        # many projects (the deferred pass) counted every project's backlog as each one's.
        .correlate_except(TaskMemory)
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
    TaskMemory.consolidation_job_id,
)


_SCORING_ROWS = select(*SCORING_COLUMNS, *STANDING_COLUMNS).where(
    TaskMemory.project_id == bindparam("project_id")
)


def project_scoring_rows(project_id: uuid.UUID) -> Bound:
    """Every memory of the project, as scoring needs it (for the tier cutoffs) and as
    re-tiering the consolidated ones needs it."""
    return Bound(_SCORING_ROWS, {"project_id": project_id})


# Which of a batch scope's optional conditions apply: unconsolidated only, by type, by age.
_Shape = tuple[bool, bool, bool]


# Not frozen: in_scope builds one for every row of a scan, and a frozen dataclass costs
# three times as much to build (about as much as scoring the row).
@dataclass(slots=True)
class BatchScope:
    """Which of its project's memories a job's batches take, described once: its shape
    and parameters make next_batch's SQL conditions (_scope_conditions), and `admits`
    tests a memory already read (the runner's scan of a small project), condition by
    condition in the same order. tests/store/test_memories.py checks the two agree."""

    job_id: int  # what this job marked already is done: a resumed job counts it once
    unconsolidated_only: bool
    memory_types: Sequence[MemoryType] | None  # None or empty: every type
    learned_before: datetime | None  # None: any age; else learned at or before it

    def shape(self) -> _Shape:
        """Which optional conditions apply: unconsolidated only, by type, by age."""
        return (self.unconsolidated_only, bool(self.memory_types), self.learned_before is not None)

    def parameters(self) -> dict[str, Any]:
        """The values the scope's conditions bind."""
        parameters: dict[str, Any] = {"job_id": self.job_id}
        if self.memory_types:
            parameters["memory_types"] = list(self.memory_types)
        if self.learned_before is not None:
            parameters["learned_before"] = self.learned_before
        return parameters

    def admits(
        self,
        *,
        memory_type: MemoryType,
        learned_at: datetime,
        is_consolidated: bool,
        consolidation_job_id: int | None,
    ) -> bool:
        """Python: the same conditions, on a memory already read."""
        return (
            consolidation_job_id != self.job_id
            and not (self.unconsolidated_only and is_consolidated)
            and (not self.memory_types or memory_type in self.memory_types)
            and (self.learned_before is None or learned_at <= self.learned_before)
        )


def _scope_conditions(shape: _Shape) -> list[ColumnElement[bool]]:
    """SQL: a BatchScope's conditions on task_memories, for a scope of this shape."""
    # Values are bound by name, so that one statement serves every job of a shape. The
    # unconsolidated condition compares with a literal false: that is what lets
    # PostgreSQL read the partial index, whatever plan it caches.
    unconsolidated_only, by_type, by_age = shape
    conditions = [TaskMemory.consolidation_job_id.is_distinct_from(bindparam("job_id"))]
    if unconsolidated_only:
        conditions.append(TaskMemory.is_consolidated == false())
    if by_type:
        conditions.append(TaskMemory.memory_type.in_(bindparam("memory_types", expanding=True)))
    if by_age:
        conditions.append(TaskMemory.learned_at <= bindparam("learned_before"))
    return conditions


@cache
def _next_batch_statement(shape: _Shape) -> Select[int, MemoryType, int, datetime, bool]:
    # Built once per shape of scope: a job's batches differ only in their parameters.
    statement = select(*SCORING_COLUMNS).where(
        TaskMemory.project_id == bindparam("project_id"),
        TaskMemory.id > bindparam("after_id"),
        *_scope_conditions(shape),
    )
    return statement.order_by(TaskMemory.id).limit(bindparam("size"))


def next_batch(
    *,
    project_id: uuid.UUID,
    job_id: int,
    after_id: int,
    size: int,
    unconsolidated_only: bool,
    memory_types: Sequence[MemoryType] | None,
    learned_before: datetime | None,
) -> Bound:
    """The next `size` memories in a job's scope after `after_id`, by id. Memories this
    job already marked are skipped, so a resumed job never counts one twice."""
    scope = BatchScope(job_id, unconsolidated_only, memory_types, learned_before)
    page = {"project_id": project_id, "after_id": after_id, "size": size}
    return Bound(_next_batch_statement(scope.shape()), page | scope.parameters())


def in_scope(
    *,
    memory_type: MemoryType,
    learned_at: datetime,
    is_consolidated: bool,
    consolidation_job_id: int | None,
    job_id: int,
    unconsolidated_only: bool,
    memory_types: Sequence[MemoryType] | None,
    learned_before: datetime | None,
) -> bool:
    """next_batch's conditions, on a memory already read (the runner's scan of a small
    project is its batches' source): BatchScope.admits."""
    scope = BatchScope(job_id, unconsolidated_only, memory_types, learned_before)
    return scope.admits(
        memory_type=memory_type,
        learned_at=learned_at,
        is_consolidated=is_consolidated,
        consolidation_job_id=consolidation_job_id,
    )


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


def _retier_values(score: Any, tier: Any, expires_at: Any) -> dict[str, Any]:
    return {"consolidation_score": score, "tier": tier, "tier_expires_at": expires_at}


_CONSOLIDATED_VALUES = {
    "is_consolidated": true(),
    "consolidated_at": bindparam("now", type_=UTCDateTime()),
    "consolidation_job_id": bindparam("job_id", type_=BigInteger()),
}


@cache
def write_as_arrays(*, consolidates: bool) -> Update:
    """A whole batch in one UPDATE, passed column by column as arrays
    (MemoryWrite.parameters()): PostgreSQL's `unnest`."""
    batch = (
        func.unnest(
            cast(bindparam("ids"), postgresql.ARRAY(BigInteger)),
            cast(bindparam("scores"), postgresql.ARRAY(Float)),
            cast(bindparam("tiers"), postgresql.ARRAY(String)),
            cast(bindparam("expiries"), postgresql.ARRAY(TIMESTAMP(timezone=True))),
        )
        .table_valued("id", "score", "tier", "expires_at")
        .render_derived(name="v")
    )
    values = _retier_values(batch.c.score, batch.c.tier, batch.c.expires_at)
    values |= _CONSOLIDATED_VALUES if consolidates else {}
    return update(_memories).where(_memories.c.id == batch.c.id).values(**values)


@cache
def write_each(*, consolidates: bool) -> Update:
    """One memory of a batch, executed once per memory (MemoryWrite.rows())."""
    values = _retier_values(bindparam("score"), bindparam("tier"), bindparam("expires_at"))
    values |= _CONSOLIDATED_VALUES if consolidates else {}
    return update(_memories).where(_memories.c.id == bindparam("memory_id")).values(**values)


@dataclass(frozen=True)
class MemoryWrite:
    """One batch's write to its memories: new scores, tiers and expiries, and, when it
    consolidates (`job_id` set), marked consolidated by that job at `now`; otherwise a
    re-tiering of memories consolidated before."""

    marks: Marks
    job_id: int | None = None
    now: datetime | None = None

    @property
    def consolidates(self) -> bool:
        return self.job_id is not None

    def _common(self) -> dict[str, Any]:
        return {"now": self.now, "job_id": self.job_id} if self.consolidates else {}

    def parameters(self) -> dict[str, Any]:
        """write_as_arrays' parameters: the batch column by column."""
        columns = {
            "ids": self.marks.ids,
            "scores": self.marks.scores,
            "tiers": [tier.value for tier in self.marks.tiers],
            "expiries": self.marks.expiries,
        }
        return columns | self._common()

    def rows(self) -> list[dict[str, Any]]:
        """write_each's parameters: one set per memory."""
        marks, common = self.marks, self._common()
        return [
            {"memory_id": i, "score": score, "tier": tier, "expires_at": expiry} | common
            for i, score, tier, expiry in zip(
                marks.ids, marks.scores, marks.tiers, marks.expiries, strict=True
            )
        ]


# --- reading what consolidation decided --------------------------------------------------

# How a listing of a project's memories is ordered: best first (consolidation_score
# DESC, id DESC), or newest first (learned_at DESC, id DESC).
MemoryOrder = Literal["score", "learned_at"]
MEMORY_ORDERS: tuple[MemoryOrder, ...] = ("score", "learned_at")

# What a reader sees of a memory, under the names services.memory.MemoryView gives them.
_VIEW_COLUMNS = (
    TaskMemory.id,
    TaskMemory.project_id,
    TaskMemory.memory_type,
    TaskMemory.execution_summary,
    TaskMemory.success,
    TaskMemory.reused_count,
    TaskMemory.learned_at,
    TaskMemory.memory_metadata.label("metadata"),
    TaskMemory.is_consolidated,
    TaskMemory.consolidated_at,
    TaskMemory.consolidation_job_id,
    TaskMemory.consolidation_score.label("score"),
    TaskMemory.tier,
    TaskMemory.tier_expires_at,
)
VIEW_NAMES = tuple(column.key for column in _VIEW_COLUMNS)

# Each database's own DESC, with no NULLS FIRST/LAST: that is the order
# ix_task_memories_ranking (project_id, tier, consolidation_score, id) gives read
# backwards, on PostgreSQL (NULLs last in the index, so first backwards) and on SQLite
# (NULLs first, so last) alike. A tiered memory always has a score (the worker writes
# both in one UPDATE, _retier_values), so the two only differ on rows that cannot be.
_BY_SCORE = (TaskMemory.consolidation_score.desc(), TaskMemory.id.desc())
_BY_LEARNED_AT = (TaskMemory.learned_at.desc(), TaskMemory.id.desc())

# The tiers in the order a listing by score takes its parts; None: not yet tiered.
_TIER_PARTS: tuple[MemoryTier | None, ...] = (*MemoryTier, None)

_MEMORY = select(*_VIEW_COLUMNS).where(TaskMemory.id == bindparam("memory_id"))


def memory_by_id(memory_id: int) -> Bound:
    """One memory as a reader sees it (no row if there is none)."""
    return Bound(_MEMORY, {"memory_id": memory_id})


def memories_page(
    project_id: uuid.UUID,
    *,
    tier: MemoryTier | None,
    consolidated: bool | None,
    order: MemoryOrder,
    limit: int,
    offset: int,
) -> Bound:
    """`limit` of the project's memories from `offset` on, in `order`; only those of
    `tier`, and only the consolidated (or unconsolidated) ones, if given."""
    parameters: dict[str, Any] = {
        "project_id": project_id,
        "size": limit,
        "skip": offset,
        "upto": offset + limit,  # what each tier's part of a read by score reads at most
    }
    if tier is not None:
        parameters["tier"] = tier
    return Bound(_page_statement(order, tier is not None, consolidated), parameters)


def _listing_conditions(*, by_tier: bool, consolidated: bool | None) -> list[ColumnElement[bool]]:
    conditions = [TaskMemory.project_id == bindparam("project_id")]
    if by_tier:
        conditions.append(TaskMemory.tier == bindparam("tier"))
    if consolidated is not None:
        # A literal rather than a bound value: whatever plan PostgreSQL caches, it can
        # then read the partial index of unconsolidated memories (see _scope_conditions).
        conditions.append(TaskMemory.is_consolidated == (true() if consolidated else false()))
    return conditions


@cache
def _page_statement(
    order: MemoryOrder, by_tier: bool, consolidated: bool | None
) -> Select[Any] | CompoundSelect[Any]:
    # Built once per shape: listings differ only in their parameters.
    conditions = _listing_conditions(by_tier=by_tier, consolidated=consolidated)
    statement = select(*_VIEW_COLUMNS).where(*conditions)
    if order == "learned_at":
        return _page(statement.order_by(*_BY_LEARNED_AT))
    if consolidated is False:
        return _page(statement.order_by(*_BACKLOG_BY_SCORE))
    if by_tier:
        return _page(statement.order_by(*_BY_SCORE))
    return _best_of_every_tier(conditions)


def _page(statement: Select[Any]) -> Select[Any]:
    return statement.limit(bindparam("size")).offset(bindparam("skip"))


# By score, the memories not tiered yet (no score) last: the order of a read by score
# of every tier (_best_of_every_tier), and of the unconsolidated memories. For those it
# is also what makes the read cheap: no index gives the leading `tier IS NULL` (constant
# within one tier), so PostgreSQL reads the backlog from the partial index
# ix_task_memories_unconsolidated and sorts it, rather than reading a tier's range of
# the ranking index backwards through all of its consolidated memories (its LIMIT
# estimate supposes the unconsolidated ones are spread evenly; measured with 1,000,000
# memories: 0.97 s by the ranking index).
_BACKLOG_BY_SCORE = (TaskMemory.tier.is_(None), *_BY_SCORE)


def _best_of_every_tier(conditions: list[ColumnElement[bool]]) -> Select[Any]:
    """A project's memories by score, every tier together, without a sort of the
    project: each tier's best `upto` (offset + limit) are read backwards from the end
    of its range of ix_task_memories_ranking, as a read of one tier is, and only those
    (at most four times `upto`) are merged and sorted. The memories not tiered yet (no
    score: the backlog) come last, newest first, from their own range of the index
    (tier NULL)."""
    # The merge orders by (not tiered, score, id): restricted to one part that is the
    # part's own order, so the best `upto` of a part in the merge's order are exactly
    # the ones the part read, whatever scores (or NULLs) its rows hold.
    parts = []
    for tier in _TIER_PARTS:
        in_tier = TaskMemory.tier.is_(None) if tier is None else TaskMemory.tier == tier
        # `tier DESC` first, constant within the part: PostgreSQL does not take
        # `tier IS NULL` as fixing the index's second column, so without it the
        # backlog's part would be sorted rather than read backwards.
        order = _BY_SCORE if tier is not None else (TaskMemory.tier.desc(), *_BY_SCORE)
        part = (
            select(*_VIEW_COLUMNS)
            .where(*conditions, in_tier)
            .order_by(*order)
            .limit(bindparam("upto"))
            # A subquery each: SQLite admits no ORDER BY or LIMIT on a UNION's members.
            .subquery()
        )
        parts.append(select(part))
    merged = union_all(*parts).subquery("merged")
    return _page(
        select(merged).order_by(merged.c.tier.is_(None), merged.c.score.desc(), merged.c.id.desc())
    )
