"""store/memories.py on both databases: writing a memory, the bounded backlog count
the threshold trigger probes with, and reading and marking a job's batches."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Integer, Uuid, bindparam, select

from omoi_os.models import ConsolidationJob, JobStatus, MemoryTier, MemoryType, TaskMemory
from omoi_os.services.database import DatabaseService
from omoi_os.store import memories as memory_store
from tests.support.factories import T0, Factories

# Built as the threshold trigger builds its probe: the ids and the limit are bound.
_COUNT_UPTO = select(
    memory_store.unconsolidated_count_upto(
        bindparam("project_id", type_=Uuid), bindparam("limit", type_=Integer)
    )
)


def _memory_rows(db: DatabaseService) -> dict[int, dict[str, Any]]:
    with db.read() as session:
        rows = session.execute(select(TaskMemory.__table__).order_by(TaskMemory.id)).all()
    return {row.id: dict(row._mapping) for row in rows}


def _insert(
    db: DatabaseService,
    project_id: uuid.UUID,
    memory_type: MemoryType,
    learned_at: datetime,
    *,
    summary: str = "learned",
) -> int:
    with db.transaction() as session:
        row = memory_store.insert_memory(
            session,
            project_id=project_id,
            memory_type=memory_type,
            execution_summary=summary,
            success=True,
            reused_count=0,
            learned_at=learned_at,
        )
    return int(row.id)


def _mark(db: DatabaseService, ids: list[int], job_id: int, now: datetime = T0) -> None:
    with db.transaction() as session:
        marks = memory_store.Marks(
            ids, [0.5] * len(ids), [MemoryTier.WARM] * len(ids), [None] * len(ids)
        )
        db.backend.write_memories(session, memory_store.MemoryWrite(marks, job_id=job_id, now=now))


# --- insert_memory -----------------------------------------------------------------------


def test_insert_memory_returns_the_stored_row_with_every_column(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    learned_at = T0 - timedelta(days=3)

    with db.transaction() as session:
        row = memory_store.insert_memory(
            session,
            project_id=project.id,
            memory_type=MemoryType.DECISION,
            execution_summary="use the outbox",
            success=False,
            reused_count=4,
            learned_at=learned_at,
        )
    returned = dict(row._mapping)

    stored = _memory_rows(db)
    assert list(stored) == [returned["id"]]
    assert returned == stored[returned["id"]]
    assert returned == {
        "id": returned["id"],
        "project_id": project.id,
        "memory_type": MemoryType.DECISION,
        "execution_summary": "use the outbox",
        "success": False,
        "reused_count": 4,
        "learned_at": learned_at,
        "metadata": None,
        "is_consolidated": False,
        "consolidated_at": None,
        "consolidation_job_id": None,
        "consolidation_score": None,
        "tier": None,
        "tier_expires_at": None,
    }
    assert set(returned) == set(TaskMemory.__table__.columns.keys())
    assert isinstance(returned["id"], int)


# --- unconsolidated_count_upto -----------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "expected"), [(0, 0), (1, 1), (10, 10), (25, 25), (26, 25), (100, 25)]
)
def test_unconsolidated_count_stops_at_the_limit(
    db: DatabaseService, factories: Factories, limit: int, expected: int
) -> None:
    project, other = factories.projects(2)
    factories.memories(project, 25)
    factories.memories(project, 7, is_consolidated=True, consolidated_at=T0)
    factories.memories(other, 40)

    with db.read() as session:
        count = session.execute(_COUNT_UPTO, {"project_id": project, "limit": limit}).scalar_one()

    assert count == expected


def test_unconsolidated_count_of_a_project_without_memories(
    db: DatabaseService, factories: Factories
) -> None:
    project, other = factories.projects(2)
    factories.memories(other, 5)

    with db.read() as session:
        counts = [
            session.execute(_COUNT_UPTO, {"project_id": project_id, "limit": 10}).scalar_one()
            for project_id in (project, uuid.uuid4(), other)
        ]

    assert counts == [0, 0, 5]


# --- next_batch --------------------------------------------------------------------------


class _Backlog:
    """One project's memories in a known layout, and the jobs that marked some of them:

    m1 learning     10 days old  unconsolidated
    m2 error_fix     5 days old  unconsolidated
    m3 decision      1 day old   consolidated by the earlier job
    m4 learning      2 days old  unconsolidated
    m5 warning       now         unconsolidated
    m6 error_fix    20 days old  consolidated by the current job
    plus one unconsolidated memory of another project (never in a batch).
    """

    def __init__(self, db: DatabaseService, factories: Factories) -> None:
        self.db = db
        self.project, other = factories.projects(2)
        self.earlier_job = factories.job(self.project, status=JobStatus.COMPLETED).id
        self.current_job = factories.job(self.project, status=JobStatus.RUNNING).id
        days = timedelta(days=1)
        layout = [
            (MemoryType.LEARNING, T0 - 10 * days),
            (MemoryType.ERROR_FIX, T0 - 5 * days),
            (MemoryType.DECISION, T0 - 1 * days),
            (MemoryType.LEARNING, T0 - 2 * days),
            (MemoryType.WARNING, T0),
            (MemoryType.ERROR_FIX, T0 - 20 * days),
        ]
        ids = [_insert(db, self.project, kind, at) for kind, at in layout]
        self.m1, self.m2, self.m3, self.m4, self.m5, self.m6 = ids
        self.foreign = _insert(db, other, MemoryType.LEARNING, T0 - 10 * days)
        _mark(db, [self.m3], self.earlier_job)
        _mark(db, [self.m6], self.current_job)

    def batch(
        self,
        *,
        job_id: int | None = None,
        after_id: int = 0,
        size: int = 100,
        unconsolidated_only: bool = True,
        memory_types: list[MemoryType] | None = None,
        learned_before: datetime | None = None,
    ) -> list[int]:
        statement = memory_store.next_batch(
            project_id=self.project,
            job_id=self.current_job if job_id is None else job_id,
            after_id=after_id,
            size=size,
            unconsolidated_only=unconsolidated_only,
            memory_types=memory_types,
            learned_before=learned_before,
        )
        with self.db.read() as session:
            return [row.id for row in session.execute(*statement)]


@pytest.fixture
def backlog(db: DatabaseService, factories: Factories) -> _Backlog:
    return _Backlog(db, factories)


def test_next_batch_reads_the_scoring_columns_by_id(backlog: _Backlog) -> None:
    statement = memory_store.next_batch(
        project_id=backlog.project,
        job_id=backlog.current_job,
        after_id=0,
        size=2,
        unconsolidated_only=True,
        memory_types=None,
        learned_before=None,
    )
    with backlog.db.read() as session:
        rows = [tuple(row) for row in session.execute(*statement)]

    assert rows == [
        (backlog.m1, MemoryType.LEARNING, 0, T0 - timedelta(days=10), True),
        (backlog.m2, MemoryType.ERROR_FIX, 0, T0 - timedelta(days=5), True),
    ]


def test_next_batch_of_unconsolidated_memories(backlog: _Backlog) -> None:
    b = backlog
    assert b.batch() == [b.m1, b.m2, b.m4, b.m5]


def test_next_batch_skips_what_the_same_job_already_marked(backlog: _Backlog) -> None:
    b = backlog
    assert b.batch(unconsolidated_only=False) == [b.m1, b.m2, b.m3, b.m4, b.m5]
    assert b.batch(unconsolidated_only=False, job_id=b.earlier_job) == [
        b.m1,
        b.m2,
        b.m4,
        b.m5,
        b.m6,
    ]


def test_next_batch_pages_by_after_id_and_size(backlog: _Backlog) -> None:
    b = backlog
    assert b.batch(size=2) == [b.m1, b.m2]
    assert b.batch(size=2, after_id=b.m2) == [b.m4, b.m5]
    assert b.batch(size=2, after_id=b.m5) == []
    assert b.batch(after_id=b.m2, unconsolidated_only=False) == [b.m3, b.m4, b.m5]


def test_next_batch_filters_memory_types(backlog: _Backlog) -> None:
    b = backlog
    learning_or_warning = [MemoryType.LEARNING, MemoryType.WARNING]
    assert b.batch(memory_types=learning_or_warning) == [b.m1, b.m4, b.m5]
    assert b.batch(memory_types=[MemoryType.CODEBASE_KNOWLEDGE]) == []
    assert b.batch(memory_types=[MemoryType.DECISION], unconsolidated_only=False) == [b.m3]
    assert b.batch(memory_types=[]) == [b.m1, b.m2, b.m4, b.m5]  # empty: every type


def test_next_batch_filters_learned_before_inclusively(backlog: _Backlog) -> None:
    b = backlog
    assert b.batch(learned_before=T0 - timedelta(days=2)) == [b.m1, b.m2, b.m4]
    assert b.batch(learned_before=T0 - timedelta(days=2, seconds=1)) == [b.m1, b.m2]
    assert b.batch(learned_before=T0 - timedelta(days=30)) == []
    assert b.batch(
        learned_before=T0 - timedelta(days=1),
        memory_types=[MemoryType.LEARNING, MemoryType.DECISION],
        unconsolidated_only=False,
        after_id=b.m1,
    ) == [b.m3, b.m4]


@pytest.mark.parametrize("unconsolidated_only", [True, False])
@pytest.mark.parametrize(
    "memory_types",
    [None, [], [MemoryType.LEARNING, MemoryType.DECISION]],
    ids=["types-none", "types-empty", "types-two"],
)
@pytest.mark.parametrize(
    "learned_before",
    [None, T0 - timedelta(days=2), T0 - timedelta(days=30)],
    ids=["any-age", "m4-exactly", "none-old-enough"],
)
def test_in_scope_agrees_with_next_batch(
    backlog: _Backlog,
    unconsolidated_only: bool,
    memory_types: list[MemoryType] | None,
    learned_before: datetime | None,
) -> None:
    """The runner picks a small project's memories in scope from its scan, in Python
    (in_scope), and a large project's with next_batch: the same memories either way,
    for every condition of the scope, and whichever job asks (the current job marked
    m6, the earlier one m3, and a job that marked nothing)."""
    b = backlog
    scope = {
        "unconsolidated_only": unconsolidated_only,
        "memory_types": memory_types,
        "learned_before": learned_before,
    }
    statement, parameters = memory_store.project_scoring_rows(b.project)
    with b.db.read() as session:
        scanned = session.execute(statement, parameters).all()
    for job_id in (b.current_job, b.earlier_job, b.current_job + 1):
        picked = [
            row.id
            for row in scanned
            if memory_store.in_scope(
                memory_type=row.memory_type,
                learned_at=row.learned_at,
                is_consolidated=row.is_consolidated,
                consolidation_job_id=row.consolidation_job_id,
                job_id=job_id,
                **scope,
            )
        ]

        assert sorted(picked) == b.batch(job_id=job_id, **scope), f"job {job_id}"


def test_learned_before() -> None:
    assert memory_store.learned_before(T0, None) is None
    assert memory_store.learned_before(T0, 0) == T0
    assert memory_store.learned_before(T0, 7) == T0 - timedelta(days=7)


# --- mark_consolidated -------------------------------------------------------------------


def test_mark_consolidated_writes_exactly_the_given_memories(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.RUNNING)
    ids = [_insert(db, project.id, MemoryType.LEARNING, T0 - timedelta(days=1)) for _ in range(4)]
    before = _memory_rows(db)
    marked_at = T0 + timedelta(hours=1)
    expiry = T0 + timedelta(days=29)

    with db.transaction() as session:
        marks = memory_store.Marks(
            [ids[2], ids[0]], [0.125, 0.875], [MemoryTier.COLD, MemoryTier.HOT], [None, expiry]
        )
        db.backend.write_memories(
            session, memory_store.MemoryWrite(marks, job_id=job.id, now=marked_at)
        )

    after = _memory_rows(db)
    consolidated = {"is_consolidated": True, "consolidated_at": marked_at}
    assert after[ids[0]] == before[ids[0]] | consolidated | {
        "consolidation_score": 0.875,
        "tier": MemoryTier.HOT,
        "tier_expires_at": expiry,
        "consolidation_job_id": job.id,
    }
    assert after[ids[2]] == before[ids[2]] | consolidated | {
        "consolidation_score": 0.125,
        "tier": MemoryTier.COLD,
        "consolidation_job_id": job.id,
    }
    assert after[ids[1]] == before[ids[1]]
    assert after[ids[3]] == before[ids[3]]
    assert factories.count(ConsolidationJob) == 1


def test_mark_consolidated_again_by_a_later_job(db: DatabaseService, factories: Factories) -> None:
    """A job that reconsolidates (unconsolidated_only=False) overwrites the earlier marks."""
    project = factories.project()
    earlier = factories.job(project.id, status=JobStatus.COMPLETED).id
    later = factories.job(project.id, status=JobStatus.RUNNING).id
    memory = _insert(db, project.id, MemoryType.WARNING, T0 - timedelta(days=1))
    _mark(db, [memory], earlier, now=T0)

    with db.transaction() as session:
        marks = memory_store.Marks([memory], [0.25], [MemoryTier.COLD], [None])
        db.backend.write_memories(
            session, memory_store.MemoryWrite(marks, job_id=later, now=T0 + timedelta(days=1))
        )

    row = _memory_rows(db)[memory]
    assert (
        row["consolidation_job_id"],
        row["consolidation_score"],
        row["tier"],
        row["consolidated_at"],
        row["is_consolidated"],
    ) == (later, 0.25, MemoryTier.COLD, T0 + timedelta(days=1), True)


def test_retier_writes_score_tier_and_expiry_of_exactly_the_given_memories(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    job = factories.job(project.id, status=JobStatus.COMPLETED).id
    ids = [_insert(db, project.id, MemoryType.LEARNING, T0 - timedelta(days=40)) for _ in range(3)]
    _mark(db, ids, job)
    before = _memory_rows(db)
    expiry = T0 + timedelta(days=50)

    with db.transaction() as session:
        marks = memory_store.Marks(
            [ids[0], ids[2]], [0.75, 0.125], [MemoryTier.HOT, MemoryTier.COLD], [expiry, None]
        )
        db.backend.write_memories(session, memory_store.MemoryWrite(marks))

    after = _memory_rows(db)
    assert after[ids[0]] == before[ids[0]] | {
        "consolidation_score": 0.75,
        "tier": MemoryTier.HOT,
        "tier_expires_at": expiry,
    }
    assert after[ids[2]] == before[ids[2]] | {"consolidation_score": 0.125, "tier": MemoryTier.COLD}
    assert after[ids[1]] == before[ids[1]]


def test_projects_with_work_are_those_with_new_memories_or_expired_tiers(
    db: DatabaseService, factories: Factories
) -> None:
    new, expired, later, settled = (factories.project().id for _ in range(4))
    job = factories.job(settled, status=JobStatus.COMPLETED).id
    _insert(db, new, MemoryType.LEARNING, T0)
    for project, expires in ((expired, T0), (later, T0 + timedelta(seconds=1)), (settled, None)):
        memory = _insert(db, project, MemoryType.LEARNING, T0 - timedelta(days=5))
        with db.transaction() as session:
            marks = memory_store.Marks([memory], [0.5], [MemoryTier.HOT], [expires])
            db.backend.write_memories(session, memory_store.MemoryWrite(marks, job_id=job, now=T0))

    with db.read() as session:
        found = set(session.scalars(memory_store.projects_with_work(T0)))

    assert found == {new, expired}
