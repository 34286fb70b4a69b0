"""The nightly run at fleet scale, on both databases: tiers that stay true as memories
age (a clock moving 40 and 100 days), idle projects passed over by the tick, and a
tick's jobs spread over a window at stable per-project offsets."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from omoi_os.config import AppSettings
from omoi_os.models import ConsolidationTick, JobStatus, MemoryTier, TaskMemory
from omoi_os.runtime import ConsolidationRuntime
from omoi_os.schedule import spread_offset
from omoi_os.services.consolidation import runner as runner_module
from omoi_os.services.database import DatabaseService
from omoi_os.store.jobs import task_id_for_job
from tests.support.clocks import FakeClock
from tests.support.consolidation import MakeTriggers, trigger_count
from tests.support.factories import T0, Factories
from tests.support.logs import one
from tests.support.rows import stored_jobs

DAY = timedelta(days=1)
LEARNED = T0 - DAY
# Ten memories reused 0..9 times, all older than 90 days: only standing tiers them.
# The best is the top 10% (hot), the next two the rest of the top 30% (warm).
RANKED_PAST_90_DAYS = (
    [(r, MemoryTier.COLD, None) for r in range(7)]
    + [(r, MemoryTier.WARM, None) for r in (7, 8)]
    + [(9, MemoryTier.HOT, None)]
)


def _settings(db: DatabaseService, **overrides: Any) -> AppSettings:
    values: dict[str, Any] = {"database_url": db.url, "consolidation_cooldown": 0}
    return AppSettings(**(values | overrides))


def _drain(db: DatabaseService, clock: FakeClock) -> int:
    """Run every claimable job to its end; how many ran."""
    worker = ConsolidationRuntime(_settings(db), engine=db.engine, clock=clock).worker
    ran = 0
    while worker.run_once():
        ran += 1
    return ran


def _tiers(db: DatabaseService) -> list[tuple[int, MemoryTier | None, datetime | None]]:
    """(reused_count, tier, tier_expires_at) of every memory, by reused_count."""
    with db.read() as session:
        statement = select(TaskMemory.reused_count, TaskMemory.tier, TaskMemory.tier_expires_at)
        return sorted(tuple(row) for row in session.execute(statement))  # type: ignore[misc]


def _ticks(db: DatabaseService) -> list[tuple[int, int, int]]:
    with db.read() as session:
        statement = select(
            ConsolidationTick.jobs_created,
            ConsolidationTick.skipped_active,
            ConsolidationTick.skipped_idle,
        ).order_by(ConsolidationTick.scheduled_for)
        return [tuple(row) for row in session.execute(statement)]  # type: ignore[misc]


# --- tiers over a moving clock ------------------------------------------------------------


def test_tiers_follow_age_and_standing_as_the_clock_moves_40_and_100_days(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    # Ten memories learned a day before T0 whose scores differ only by reuse: the best
    # one is the project's top 10%, the best three its top 30%.
    for reused in range(10):
        factories.memories(project.id, 1, reused_count=reused, learned_at=LEARNED)
    triggers = make_triggers()

    clock.set(T0)
    assert triggers.run_scheduled_tick_sync(T0).created == 1
    assert _drain(db, clock) == 1
    hot_until = LEARNED + 30 * DAY
    assert _tiers(db) == [(reused, MemoryTier.HOT, hot_until) for reused in range(10)]

    # Ten days on nothing has aged past a boundary: the project is idle, no job.
    clock.set(T0 + 10 * DAY)
    quiet = triggers.run_scheduled_tick_sync(T0 + 10 * DAY)
    assert (quiet.created, quiet.skipped_idle) == (0, 1)

    # 40 days on (41 days old): the top 10% stays hot, everything else is warm by age.
    clock.set(T0 + 40 * DAY)
    assert triggers.run_scheduled_tick_sync(T0 + 40 * DAY).created == 1
    assert _drain(db, clock) == 1
    warm_until = LEARNED + 90 * DAY
    assert _tiers(db) == [(r, MemoryTier.WARM, warm_until) for r in range(9)] + [
        (9, MemoryTier.HOT, warm_until)
    ]

    # 100 days on (101 days old): only standing is left: top 10% hot, top 30% warm.
    clock.set(T0 + 100 * DAY)
    assert triggers.run_scheduled_tick_sync(T0 + 100 * DAY).created == 1
    assert _drain(db, clock) == 1
    assert _tiers(db) == RANKED_PAST_90_DAYS
    refreshed = [job.result["tiers_refreshed"] for job in stored_jobs(db) if job.result]
    assert refreshed == [0, 10, 10]

    # Past both boundaries, and nothing new: no more jobs, night after night.
    clock.set(T0 + 400 * DAY)
    assert triggers.run_scheduled_tick_sync(T0 + 400 * DAY).created == 0


def test_new_memories_change_the_standing_of_consolidated_ones(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    old = T0 - 200 * DAY
    for reused in range(10):
        factories.memories(project.id, 1, reused_count=reused, learned_at=old)
    clock.set(T0)
    triggers = make_triggers()
    triggers.run_scheduled_tick_sync(T0)
    _drain(db, clock)
    assert [tier for _, tier, _ in _tiers(db)][-1] is MemoryTier.HOT

    # Ten better memories arrive: the old best is no longer in the top 10% or 30%.
    factories.memories(project.id, 10, reused_count=5_000, learned_at=old)
    triggers.run_scheduled_tick_sync(T0 + DAY)
    _drain(db, clock)

    tiers = _tiers(db)
    assert [tier for _, tier, _ in tiers[:10]] == [MemoryTier.COLD] * 10
    assert {tier for _, tier, _ in tiers[10:]} == {MemoryTier.HOT}  # tied: they share it
    jobs = stored_jobs(db)
    assert jobs[-1].result is not None
    assert jobs[-1].result["tiers_refreshed"] == 3  # the old best and the two warm ones


def test_a_dry_run_counts_the_tiers_it_would_refresh_and_writes_none(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    factories.memories(project.id, 3, learned_at=LEARNED)
    clock.set(T0)
    triggers = make_triggers()
    triggers.run_scheduled_tick_sync(T0)
    _drain(db, clock)
    before = _tiers(db)

    clock.set(T0 + 40 * DAY)
    job_id = triggers.trigger_consolidation_sync(project.id, scope={"dry_run": True})
    _drain(db, clock)

    assert _tiers(db) == before
    dry = next(job for job in stored_jobs(db) if job.id == job_id)
    assert dry.result is not None
    assert dry.result["tiers_refreshed"] == 3


# --- idle projects ------------------------------------------------------------------------


def test_a_tick_passes_over_idle_projects_and_says_how_many(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    busy = factories.projects(3, new_memories=2)
    idle = factories.projects(40)
    factories.projects(5, is_active=False, new_memories=1)  # inactive: never counted
    consolidated_idle = factories.project()
    factories.memories(consolidated_idle.id, 2, is_consolidated=True, tier=MemoryTier.COLD)
    running = busy[0]
    factories.job(running, status=JobStatus.RUNNING)
    triggers = make_triggers()

    result = triggers.run_scheduled_tick_sync(T0)

    assert (result.created, result.skipped_active, result.skipped_idle) == (2, 1, 41)
    assert _ticks(db) == [(2, 1, 41)]
    jobs = [job for job in stored_jobs(db) if job.scheduled_for is not None]
    assert sorted(job.project_id for job in jobs) == sorted(busy[1:])
    assert len(factories.queue_rows()) == 2  # none for an idle project
    assert not {job.project_id for job in stored_jobs(db)} & set(idle)
    assert trigger_count(triggers, "scheduled", "skipped_idle") == 41
    assert one(caplog, "tick_ran").skipped_idle == 41  # type: ignore[attr-defined]


# --- a spread tick ------------------------------------------------------------------------


def test_a_spread_tick_makes_each_job_claimable_at_its_projects_stable_offset(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    projects = factories.projects(200, new_memories=1)
    spread = timedelta(hours=2)
    clock.set(T0)
    triggers = make_triggers(consolidation_spread=int(spread.total_seconds()))

    triggers.run_scheduled_tick_sync(T0)

    jobs = stored_jobs(db)
    queued = {row.task_id: row.available_at for row in factories.queue_rows()}
    offsets = {job.project_id: job.claimable_at - T0 for job in jobs if job.claimable_at}
    assert set(offsets) == set(projects)
    assert all(timedelta(0) <= offset < spread for offset in offsets.values())
    assert len(set(offsets.values())) > 190  # spread out, not bunched
    assert max(offsets.values()) > spread * 0.9 and min(offsets.values()) < spread * 0.1
    for job in jobs:
        assert queued[task_id_for_job(job.id)] == job.claimable_at
        assert job.claimable_at == T0 + spread_offset(job.project_id, spread)


def test_spread_offsets_are_the_same_every_night_and_on_every_replica() -> None:
    spread = timedelta(hours=3)

    # Fixed values: a hash that changed between processes or releases (Python's own
    # hash() does) would move every project's job on some replica or after an upgrade.
    assert spread_offset(uuid.UUID(int=1), spread) == timedelta(minutes=20, seconds=6.402)
    assert spread_offset(uuid.UUID(int=2**127), spread) == timedelta(minutes=27, seconds=53.685)
    assert spread_offset(uuid.UUID(int=1), timedelta(0)) == timedelta(0)


def test_a_spread_job_is_not_claimed_before_its_time(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    factories.projects(1, new_memories=1)
    clock.set(T0)
    triggers = make_triggers(consolidation_spread=3600)
    triggers.run_scheduled_tick_sync(T0)
    (job,) = stored_jobs(db)
    assert job.claimable_at is not None

    clock.set(job.claimable_at - timedelta(seconds=1))
    assert _drain(db, clock) == 0
    clock.set(job.claimable_at)
    assert _drain(db, clock) == 1


def test_a_job_not_spread_is_claimable_when_created(
    db: DatabaseService, factories: Factories, make_triggers: MakeTriggers, clock: FakeClock
) -> None:
    project = factories.project()
    clock.set(T0)
    job_id = make_triggers().trigger_consolidation_sync(project.id)

    (job,) = stored_jobs(db)
    assert (job.id, job.claimable_at) == (job_id, T0)
    assert [row.available_at for row in factories.queue_rows()] == [T0]


@pytest.mark.parametrize("read_at_once", [10_000, 4])
def test_a_large_projects_streamed_read_tiers_as_the_small_read_does(
    db: DatabaseService,
    factories: Factories,
    make_triggers: MakeTriggers,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    read_at_once: int,
) -> None:
    monkeypatch.setattr(runner_module, "_STREAM_ROWS", read_at_once)
    project = factories.project()
    for reused in range(10):
        factories.memories(project.id, 1, reused_count=reused, learned_at=T0 - 100 * DAY)
    clock.set(T0)
    make_triggers().run_scheduled_tick_sync(T0)

    assert _drain(db, clock) == 1

    assert _tiers(db) == RANKED_PAST_90_DAYS
