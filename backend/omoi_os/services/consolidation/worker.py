"""ConsolidationWorker: claims queued consolidation tasks and runs their jobs.

One claimed task is one job run: the job goes `running`, the runner consolidates
its memories in committed batches within `consolidation_timeout`, and the job ends
`completed`, `timed_out`, or, after the queue's last retry, `failed`. The job's final
status and its queue task's completion are one transaction.

A stopping worker finishes its current batch and hands the job back (`pending`, its
task queued again without spending an attempt). A killed worker leaves a lease that
expires; any worker then reclaims the task and the job resumes after its last
committed batch. On PostgreSQL workers wake on NOTIFY; they also poll, which is all
they do on SQLite.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.config import AppSettings
from omoi_os.engines.listener import QueueListener
from omoi_os.failures import describe_failure
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import JobStatus
from omoi_os.services.consolidation.job_queue import (
    ClaimedJob,
    EndedUnrun,
    Ending,
    EndWritten,
    JobQueue,
    TaskEnd,
)
from omoi_os.services.consolidation.runner import (
    ConsolidationRunner,
    JobVanished,
    RunEnd,
    RunResult,
)
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import ClaimedTask, TaskQueueService
from omoi_os.services.threads import Wakeup

logger = logging.getLogger(__name__)

RECLAIM_INTERVAL_S = 5.0
# A long step outside a batch renews the lease this many times per lease period.
HEARTBEATS_PER_LEASE = 3
DEFAULT_STOP_TIMEOUT = 30.0


class LeaseLost(Exception):
    """Another worker owns the task now (this one stalled past its lease)."""


class ConsolidationWorker:
    """A pool of threads, each claiming and running one job at a time."""

    def __init__(
        self,
        db: DatabaseService,
        *,
        settings: AppSettings,
        queue: TaskQueueService,
        metrics: ConsolidationMetrics,
        clock: Clock = utc_now,
        timer: Callable[[], float] = time.monotonic,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.queue = queue
        self._jobs = JobQueue(db, queue, clock=clock)
        self._metrics = metrics
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._runner = ConsolidationRunner(
            db, batch_size=settings.worker_batch_size, clock=clock, timer=timer
        )
        self._timer = timer
        self._clock = clock
        self._stopping = threading.Event()
        self._wake = Wakeup()
        self._threads: list[threading.Thread] = []
        self._listener: QueueListener | None = None
        self._last_reclaim = 0.0

    # --- lifecycle ------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True from stop() on, until the worker is started again."""
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        """Start `worker_concurrency` threads (and the NOTIFY listener on PostgreSQL)."""
        if self._threads:
            return
        self._stopping.clear()
        self._wake = Wakeup()
        self._listener = self._make_listener()
        if self._listener is not None:
            self._listener.start()
        for slot in range(self.settings.worker_concurrency):
            thread = threading.Thread(
                target=self._loop, name=f"consolidation-worker-{slot}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        logger.info(
            "consolidation worker %s started (%d thread(s))", self.worker_id, len(self._threads)
        )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop taking tasks; a job in progress finishes its batch and is handed back.
        Waits at most `timeout` seconds (idempotent: a worker with no thread says
        nothing)."""
        had_threads = bool(self._threads)
        self._stopping.set()
        self._wake.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        still = [thread.name for thread in self._threads if thread.is_alive()]
        if still:
            logger.warning("worker threads still finishing after %.1f s: %s", timeout, still)
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        if had_threads:
            logger.info("consolidation worker %s stopped", self.worker_id)

    def _make_listener(self) -> QueueListener | None:
        """Where the database can, a listener that wakes idle threads at once."""
        return self.db.backend.listener(self.db.url, self._wake.notify)

    def wait_listening(self, timeout: float = 5.0) -> bool:
        """On PostgreSQL, wait until NOTIFY wake-ups are in place (True on SQLite)."""
        return self._listener is None or self._listener.wait_listening(timeout)

    # --- the loop -------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            seen = self._wake.generation  # a NOTIFY from here on cuts the idle wait short
            try:
                self._reclaim_now_and_then()
                worked = self.run_once()
            except OperationalError as exc:  # the database is down: one line, then wait
                logger.warning("consolidation worker: database unavailable: %s", exc.orig)
                worked = False
            except Exception:
                logger.exception("consolidation worker loop failed; retrying shortly")
                worked = False
            if not worked:
                self._wake.wait(seen, self._idle_wait())

    def _idle_wait(self) -> float:
        """Poll interval, or less if a queued task becomes claimable sooner (debounce)."""
        wait = self.settings.worker_poll_interval
        try:
            next_at = self._jobs.next_claimable_at()
        except Exception:  # the database is down: just poll
            return wait
        if next_at is not None:
            wait = min(wait, max((next_at - self._clock()).total_seconds(), 0.01))
        return wait

    def _reclaim_now_and_then(self) -> None:
        if time.monotonic() - self._last_reclaim >= RECLAIM_INTERVAL_S:
            self._last_reclaim = time.monotonic()
            with self.db.transaction() as session:
                self.queue.reclaim_expired(session=session)

    def run_once(self) -> bool:
        """Claim one task and run its job to an end; False if nothing was due."""
        claimed = self._jobs.claim(self.worker_id)
        if claimed is None:
            return False
        if isinstance(claimed, EndedUnrun):
            logger.info(
                "job %s is no longer active; its task is dropped",
                claimed.task.task_id,
                extra={"action": "task_dropped", "job_id": claimed.task.task_id},
            )
            return True
        self._log_started(claimed)
        self._end(claimed, self._run(claimed))
        return True

    # --- one job ----------------------------------------------------------------------

    def _should_stop(self) -> bool:
        """Asked between batches: True once the worker is stopping."""
        return self._stopping.is_set()

    def _log_started(self, job: ClaimedJob) -> None:
        logger.info(
            "job %d of project %s: running (attempt %d/%d)",
            job.id,
            job.project_id,
            job.task.attempts,
            job.task.max_attempts,
            extra={
                "action": "job_started",
                "job_id": job.id,
                "project_id": str(job.project_id),
                "attempt": job.task.attempts,
            },
        )

    def _run(self, job: ClaimedJob) -> RunResult | _Unfinished:
        """Run the job's consolidation; what stopped it if it did not get to an end."""
        deadline = self._timer() + self.settings.consolidation_timeout
        try:
            return self._runner.run(
                job,
                deadline=deadline,
                stopping=self._should_stop,
                lease=_TaskLease(self, job.task),
            )
        except (LeaseLost, JobVanished) as exc:
            return _Unfinished(lost=str(exc))
        except Exception as exc:
            logger.exception("job %d of project %s: consolidation failed", job.id, job.project_id)
            return _Unfinished(error=describe_failure(exc))

    def _end(self, job: ClaimedJob, outcome: RunResult | _Unfinished) -> None:
        """The one place a claimed job ends: what the run returned decides the job's
        status and its task's, written together (JobQueue.end), then counted and
        logged once committed."""
        if isinstance(outcome, _Unfinished) and outcome.lost is not None:
            logger.warning("job %d: stopped working on it: %s", job.id, outcome.lost)
            return
        ending = self._ending(job, outcome)
        written = self._jobs.end(job, self.worker_id, ending)
        if written is not EndWritten.WRITTEN:
            logger.warning("job %d: not settled as %s: %s", job.id, ending.status, written.value)
            return
        self._report(job, ending, outcome)

    def _ending(self, job: ClaimedJob, outcome: RunResult | _Unfinished) -> Ending:
        if isinstance(outcome, _Unfinished):
            # The queue's own rule decides: retry (the job stays the active one) or not.
            will_retry = job.task.attempts < job.task.max_attempts
            status = JobStatus.PENDING if will_retry else JobStatus.FAILED
            return Ending(status, TaskEnd.FAILED, error=outcome.error)
        progress, result = outcome.progress, outcome.progress.to_document()
        consolidated = progress.memories_consolidated
        if outcome.end is RunEnd.STOPPED:
            return Ending(JobStatus.PENDING, TaskEnd.HANDED_BACK, result=result)
        if outcome.end is RunEnd.CANCELLED:
            # Its batches so far stay committed; a later job does the rest.
            return Ending(JobStatus.CANCELLED, TaskEnd.DONE, result, None, consolidated)
        if outcome.end is RunEnd.TIMED_OUT:
            error = (
                f"exceeded consolidation_timeout ({self.settings.consolidation_timeout} s)"
                f"; {progress.memories_processed} memories done, the rest left for a "
                "later job"
            )
            return Ending(JobStatus.TIMED_OUT, TaskEnd.DONE, result, error, consolidated)
        return Ending(
            JobStatus.COMPLETED, TaskEnd.DONE, result, None, consolidated, outcome.last_batch
        )

    def _report(self, job: ClaimedJob, ending: Ending, outcome: RunResult | _Unfinished) -> None:
        """Count and log an end that committed."""
        if isinstance(outcome, _Unfinished):
            self._report_failure(job, ending)
            return
        if ending.status is JobStatus.PENDING:
            logger.info(
                "job %d handed back after %d memories (worker stopping)",
                job.id,
                outcome.progress.memories_processed,
            )
            return
        self._metrics.jobs_finished.labels(ending.status.value).inc()
        result = outcome.progress.to_document()
        logger.info(
            "job %d of project %s: %s, %d memories (%s)",
            job.id,
            job.project_id,
            ending.status,
            outcome.progress.memories_processed,
            result["tiers"],
            extra={
                "action": "job_finished",
                "status": ending.status.value,
                "job_id": job.id,
                "project_id": str(job.project_id),
                "memories_processed": outcome.progress.memories_processed,
            },
        )

    def _report_failure(self, job: ClaimedJob, ending: Ending) -> None:
        will_retry = ending.status is JobStatus.PENDING
        if not will_retry:
            self._metrics.jobs_finished.labels(ending.status.value).inc()
        logger.warning(
            "job %d of project %s: attempt %d failed (%s): %s",
            job.id,
            job.project_id,
            job.task.attempts,
            "will retry" if will_retry else "giving up",
            ending.error,
            extra={
                "action": "job_attempt_failed",
                "job_id": job.id,
                "project_id": str(job.project_id),
                "attempt": job.task.attempts,
                "will_retry": will_retry,
            },
        )


@dataclass(frozen=True)
class _Unfinished:
    """A run that did not get to an end: it raised `error` (an attempt spent), or lost
    its job to another worker or to the sweeper (`lost`: nothing to write)."""

    error: str | None = None
    lost: str | None = None


class _TaskLease:
    """A worker's hold on a job's task, which the runner renews (runner.Lease): inside
    a batch's session (that batch rolls back if another worker took the task over, so
    two workers never write the same job) or in a transaction of its own."""

    def __init__(self, worker: ConsolidationWorker, task: ClaimedTask) -> None:
        self._db, self._queue, self._worker_id = worker.db, worker.queue, worker.worker_id
        self._task = task
        self.beat_interval = worker.settings.worker_lease_seconds / HEARTBEATS_PER_LEASE

    def hold(self, session: Session) -> None:
        self._renew(session)

    def beat(self) -> None:
        with self._db.transaction() as session:
            self._renew(session)

    def _renew(self, session: Session) -> None:
        if not self._queue.extend_lease(
            session=session, task=self._task, worker_id=self._worker_id
        ):
            raise LeaseLost(f"task {self._task.id} was taken over by another worker")
