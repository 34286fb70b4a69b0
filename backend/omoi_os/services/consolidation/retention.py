"""Retention: history older than `retention_days` is deleted, so a year of nightly runs
does not pile up in the queue and job tables.

What goes and what stays is the store's (store/retention.py): done and dead queue
tasks; finished jobs except each project's most recent; tick records except the
newest. Memories are never touched.

Deleting runs in batches of `batch_size` rows, each its own short transaction, so a
purge never holds locks for long, and several replicas purging at once share the
rows (SKIP LOCKED on PostgreSQL). After each batch it pauses `pause_ratio` times as
long as the batch took, so that a long purge leaves the database to the memory writes
going on beside it. The scheduler's periodic pass (every 30 s) calls
`purge_if_due`, which purges at most once per `interval` (an hour) on each replica,
and at most `batches_per_run` batches per table in one pass, so that a first purge of
a long history never holds up the pass's other steps (the sweeper, the tick
catch-up): a pass that stops at that budget lets the next pass continue.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from omoi_os.clock import Clock
from omoi_os.config import RETENTION_DAYS_RANGE, AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.services.database import DatabaseService
from omoi_os.store import retention as retention_store

logger = logging.getLogger(__name__)

BATCH_SIZE = 1_000
BATCHES_PER_RUN = 50  # per table and periodic pass: 50,000 rows, a few seconds
PURGE_INTERVAL = timedelta(hours=1)
# After each full batch, a pause as long as the batch took: a purge of a long history
# takes at most half of the database's time (and of its WAL, which replicas must
# follow), whatever the history's size.
PAUSE_RATIO = 1.0


def check_retention_days(days: int) -> int:
    """`days` if it is a retention AppSettings accepts; ValueError naming the range."""
    low, high = RETENTION_DAYS_RANGE
    if not low <= days <= high:
        raise ValueError(f"must be between {low} and {high} days, not {days}")
    return days


@dataclass
class PurgeSummary:
    """What one purge did: rows deleted and transactions, by table."""

    before: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    transactions: dict[str, int] = field(default_factory=dict)
    longest_batch_seconds: float = 0.0
    # False when the batch budget ran out while a table still had expired rows.
    complete: bool = True

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class Retention:
    """Deletes expired history, in bounded batches."""

    def __init__(
        self,
        db: DatabaseService,
        *,
        settings: AppSettings,
        clock: Clock,
        metrics: ConsolidationMetrics,
        batch_size: int = BATCH_SIZE,
        batches_per_run: int = BATCHES_PER_RUN,
        interval: timedelta = PURGE_INTERVAL,
        pause_ratio: float = PAUSE_RATIO,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self.batch_size = batch_size
        self._batches_per_run = batches_per_run
        self._interval = interval
        self._pause_ratio = pause_ratio
        self._sleep = sleep
        self._next_run_at: datetime | None = None  # None: at the first pass

    def cutoff(self, older_than_days: int | None = None) -> datetime:
        """The instant before which history is expired (ValueError for a bad day count)."""
        days = self._settings.retention_days if older_than_days is None else older_than_days
        return self._clock() - timedelta(days=check_retention_days(days))

    def count_expired(self, older_than_days: int | None = None) -> dict[str, int]:
        """What a purge would delete now, by table (a dry run: nothing is deleted)."""
        before = self.cutoff(older_than_days)
        with self._db.read() as session:
            return {
                table: retention_store.count_expired(session, table, before=before)
                for table in retention_store.HISTORY_TABLES
            }

    def purge(
        self, older_than_days: int | None = None, *, max_batches: int | None = None
    ) -> PurgeSummary:
        """Delete expired history, table by table, at most `max_batches` batches per
        table (None: until none is left). Counted, and logged in one line."""
        summary = PurgeSummary(before=self.cutoff(older_than_days))
        for table in retention_store.HISTORY_TABLES:
            self._purge_table(table, summary, max_batches)
            self._metrics.retention_deleted.labels(table).inc(summary.deleted[table])
        self._log(summary)
        return summary

    def purge_if_due(self) -> PurgeSummary | None:
        """The periodic pass's step: purge once per interval, continuing at the next
        pass while a purge stops at its batch budget. None when not due."""
        now = self._clock()
        if self._next_run_at is not None and now < self._next_run_at:
            return None
        summary = self.purge(max_batches=self._batches_per_run)
        self._next_run_at = now + self._interval if summary.complete else now
        return summary

    def _purge_table(self, table: str, summary: PurgeSummary, max_batches: int | None) -> None:
        summary.deleted[table] = summary.transactions[table] = 0
        resume_from: datetime | None = None
        for _ in _budget(max_batches):
            started = time.perf_counter()
            history, pick = retention_store.pick_batch(
                table, before=summary.before, limit=self.batch_size, resume_from=resume_from
            )
            engine = self._db.backend
            with self._db.transaction() as session:
                locked = engine.lock_for_purge(pick, history)
                batch = engine.delete_picked(session, history, locked, resume_from)
            elapsed = time.perf_counter() - started
            summary.longest_batch_seconds = max(summary.longest_batch_seconds, elapsed)
            summary.transactions[table] += 1
            summary.deleted[table] += batch.deleted
            resume_from = batch.resume_from
            if batch.deleted < self.batch_size:  # nothing left (or the rest is locked)
                return
            self._sleep(elapsed * self._pause_ratio)
        summary.complete = False

    @staticmethod
    def _log(summary: PurgeSummary) -> None:
        deleted = summary.deleted
        logger.info(
            "retention: deleted %d queue tasks, %d jobs and %d tick records from before "
            "%s, in %d transactions%s",
            deleted[retention_store.TASKS],
            deleted[retention_store.JOBS],
            deleted[retention_store.TICKS],
            summary.before.isoformat(),
            sum(summary.transactions.values()),
            "" if summary.complete else " (more left for the next pass)",
            extra={
                "action": "retention_purged",
                "before": summary.before.isoformat(),
                "deleted": dict(deleted),
                "transactions": sum(summary.transactions.values()),
                "longest_batch_ms": round(summary.longest_batch_seconds * 1000, 1),
                "complete": summary.complete,
            },
        )


def _budget(max_batches: int | None) -> Iterable[int]:
    """One item per batch allowed (endless when None)."""
    return itertools.count() if max_batches is None else range(max_batches)
