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
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from omoi_os.clock import Clock, utc_now
from omoi_os.config import AppSettings
from omoi_os.metrics import ConsolidationMetrics
from omoi_os.models import JobStatus
from omoi_os.services.consolidation import job_tasks
from omoi_os.services.consolidation.decisions import starts_cooldown
from omoi_os.services.consolidation.runner import (
    ConsolidationRunner,
    Heartbeat,
    JobToRun,
    JobVanished,
    Progress,
    RunEnd,
)
from omoi_os.services.consolidation.scope import ConsolidationScope
from omoi_os.services.database import DatabaseService
from omoi_os.services.task_queue import (
    ClaimedTask,
    FailOutcome,
    QueueListener,
    TaskQueueService,
)
from omoi_os.services.threads import Wakeup
from omoi_os.store import jobs as job_store
from omoi_os.store import projects as project_store
from omoi_os.store.memories import MemoryWrite

logger = logging.getLogger(__name__)

TASK_TYPES = (job_store.CONSOLIDATION_TASK,)
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
        queue: TaskQueueService | None = None,
        metrics: ConsolidationMetrics | None = None,
        clock: Clock = utc_now,
        timer: Callable[[], float] = time.monotonic,
        worker_id: str | None = None,
    ) -> None:
        self._db = db
        self.settings = settings
        self._lease = timedelta(seconds=settings.worker_lease_seconds)
        self.queue = queue or TaskQueueService(clock=clock, lease=self._lease)
        self._metrics = metrics or ConsolidationMetrics()
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
        Waits at most `timeout` seconds (idempotent)."""
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
        logger.info("consolidation worker %s stopped", self.worker_id)

    def _make_listener(self) -> QueueListener | None:
        """On PostgreSQL, a NOTIFY listener that wakes idle threads at once."""
        if self._db.dialect != "postgresql":
            return None
        return QueueListener(self._db.url, self._wake.notify)

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
            with self._db.read() as session:
                next_at = self.queue.next_available_at(session=session, task_types=TASK_TYPES)
        except Exception:  # the database is down: just poll
            return wait
        if next_at is not None:
            wait = min(wait, max((next_at - self._clock()).total_seconds(), 0.01))
        return wait

    def _reclaim_now_and_then(self) -> None:
        if time.monotonic() - self._last_reclaim >= RECLAIM_INTERVAL_S:
            self._last_reclaim = time.monotonic()
            with self._db.transaction() as session:
                self.queue.reclaim_expired(session=session)

    def run_once(self) -> bool:
        """Claim one task and run its job to an end; False if nothing was due."""
        claimed = self._claim_and_start()
        if claimed is None:
            return False
        task, job = claimed
        if job is not None:
            self._run_task(task, job)
        return True

    # --- one task -------------------------------------------------------------------

    def _claim_and_start(self) -> tuple[ClaimedTask, JobToRun | None] | None:
        """Claim a task and mark its job running, as one unit. A job that ended
        meanwhile (cancelled, timed out …) is never run: its task is dropped."""
        claimed = job_tasks.claim_and_start(
            self._db, self.queue, task_types=TASK_TYPES, worker_id=self.worker_id
        )
        if claimed is None:
            return None
        task, started = claimed.task, claimed.job
        if started is None:
            with self._db.transaction() as session:
                self.queue.complete(session=session, task=task, worker_id=self.worker_id)
            logger.info(
                "job %s is no longer active; its task is dropped",
                task.task_id,
                extra={"action": "task_dropped", "job_id": task.task_id},
            )
            return task, None
        job = JobToRun(
            id=started.id,
            project_id=started.project_id,
            scope=ConsolidationScope.model_validate(started.scope),
            previous_result=started.result,
            cancel_requested=started.cancel_requested_at is not None,
        )
        logger.info(
            "job %d of project %s: running (attempt %d/%d)",
            job.id,
            job.project_id,
            task.attempts,
            task.max_attempts,
            extra={
                "action": "job_started",
                "job_id": job.id,
                "project_id": str(job.project_id),
                "attempt": task.attempts,
            },
        )
        return task, job

    def _run_task(self, task: ClaimedTask, job: JobToRun) -> None:
        deadline = self._timer() + self.settings.consolidation_timeout
        settled: list[Progress] = []

        def complete_with_last_batch(
            session: Session, progress: Progress, memories: MemoryWrite | None
        ) -> None:
            self._complete_in(session, task, job, progress, memories)
            settled.append(progress)

        try:
            end, progress = self._runner.run(
                job,
                deadline=deadline,
                keep_going=self._keep_going,
                in_batch=lambda session: self._hold_lease(task, session),
                heartbeat=Heartbeat(
                    lambda: self._hold_lease(task, None),
                    interval=self._lease.total_seconds() / HEARTBEATS_PER_LEASE,
                ),
                finish=complete_with_last_batch,
            )
        except (LeaseLost, JobVanished) as exc:
            logger.warning("job %d: stopped working on it: %s", job.id, exc)
            return
        except Exception as exc:
            logger.exception("job %d of project %s: consolidation failed", job.id, job.project_id)
            self._fail(task, job, f"{exc.__class__.__name__}: {exc}")
            return
        if settled:  # ended in the same commit as its last batch
            self._finished(job, JobStatus.COMPLETED, progress)
            return
        self._end(task, job, end, progress)

    def _keep_going(self) -> bool:
        """Asked between batches: False once the worker is stopping."""
        return not self._stopping.is_set()

    def _hold_lease(self, task: ClaimedTask, session: Session | None) -> None:
        """Renew the lease (inside each batch's transaction: that batch rolls back if
        another worker took the task over, so two workers never write the same job)."""
        if session is None:
            with self._db.transaction() as own:
                held = self.queue.extend_lease(session=own, task=task, worker_id=self.worker_id)
        else:
            held = self.queue.extend_lease(session=session, task=task, worker_id=self.worker_id)
        if not held:
            raise LeaseLost(f"task {task.id} was taken over by another worker")

    def _end(self, task: ClaimedTask, job: JobToRun, end: RunEnd, progress: Progress) -> None:
        result = progress.to_document()
        if end is RunEnd.CANCELLED:
            # Its batches so far stay committed; a later job does the rest.
            if self._settle(
                job, progress, JobStatus.CANCELLED, lambda s: self._complete(task, s), result=result
            ):
                self._finished(job, JobStatus.CANCELLED, progress)
            return
        if end is RunEnd.STOPPED:
            released = self._settle(
                job, progress, JobStatus.PENDING, lambda s: self._release(task, s), result=result
            )
            if released:
                logger.info(
                    "job %d handed back after %d memories (worker stopping)",
                    job.id,
                    progress.memories_processed,
                )
            return
        status = JobStatus.COMPLETED if end is RunEnd.COMPLETED else JobStatus.TIMED_OUT
        error = None
        if status is JobStatus.TIMED_OUT:
            error = (
                f"exceeded consolidation_timeout ({self.settings.consolidation_timeout} s)"
                f"; {progress.memories_processed} memories done, the rest left for a "
                "later job"
            )
        completed = self._settle(
            job, progress, status, lambda s: self._complete(task, s), result=result, error=error
        )
        if completed:
            self._finished(job, status, progress)

    def _finished(self, job: JobToRun, status: JobStatus, progress: Progress) -> None:
        result = progress.to_document()
        self._metrics.jobs_finished.labels(status.value).inc()
        logger.info(
            "job %d of project %s: %s, %d memories (%s)",
            job.id,
            job.project_id,
            status,
            progress.memories_processed,
            result["tiers"],
            extra={
                "action": "job_finished",
                "status": status.value,
                "job_id": job.id,
                "project_id": str(job.project_id),
                "memories_processed": progress.memories_processed,
            },
        )

    def _fail(self, task: ClaimedTask, job: JobToRun, error: str) -> None:
        # The queue's own rule decides: retry (the job stays the active one) or give up.
        will_retry = task.attempts < task.max_attempts
        status = JobStatus.PENDING if will_retry else JobStatus.FAILED
        if not self._settle(
            job, None, status, lambda session: self._fail_task(task, error, session), error=error
        ):
            return
        if status is JobStatus.FAILED:
            self._metrics.jobs_finished.labels(status.value).inc()
        logger.warning(
            "job %d of project %s: attempt %d failed (%s): %s",
            job.id,
            job.project_id,
            task.attempts,
            "will retry" if will_retry else "giving up",
            error,
            extra={
                "action": "job_attempt_failed",
                "job_id": job.id,
                "project_id": str(job.project_id),
                "attempt": task.attempts,
                "will_retry": will_retry,
            },
        )

    def _settle(
        self,
        job: JobToRun,
        progress: Progress | None,
        status: JobStatus,
        settle_task: Callable[[Session], bool],
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Settle the job's queue task and write the job's new status in one transaction,
        the queue row first, the project's cooldown last (invariant 7,
        docs/invariants.md: no deadlock). Nothing is written unless this worker still
        holds the task and the job is still running: a worker that stalled past its
        lease must not overwrite another's work. Returns whether it was written."""
        now = self._clock()
        consolidated = progress.memories_consolidated if progress else 0
        try:
            with self._db.transaction() as session:
                if not settle_task(session):
                    raise LeaseLost(f"job {job.id}'s task was taken over by another worker")
                if not job_store.finish_job(
                    session, job.id, status=status, now=now, result=result, error=error
                ):
                    raise JobVanished(f"job {job.id} is no longer running")
                if starts_cooldown(status, consolidated):
                    project_store.start_cooldown(session, [job.project_id], at=now)
        except (JobVanished, LeaseLost) as exc:  # rolled back: nothing written
            logger.warning("job %d: not settled as %s: %s", job.id, status, exc)
            return False
        return True

    def _complete_in(
        self,
        session: Session,
        task: ClaimedTask,
        job: JobToRun,
        progress: Progress,
        memories: MemoryWrite | None,
    ) -> None:
        """Complete the job and its task in the transaction of its last batch, with that
        batch's memories; raises (so that the batch rolls back) unless this worker still
        holds the task and the job is still running, as _settle requires."""
        completion = job_tasks.complete(
            session,
            self.queue,
            task,
            worker_id=self.worker_id,
            job_id=job.id,
            project_id=job.project_id,
            result=progress.to_document(),
            now=self._clock(),
            starts_cooldown=starts_cooldown(JobStatus.COMPLETED, progress.memories_consolidated),
            memories=memories,
        )
        if not completion.task_held:
            raise LeaseLost(f"job {job.id}'s task was taken over by another worker")
        if not completion.job_was_running:
            raise JobVanished(f"job {job.id} is no longer running")

    def _complete(self, task: ClaimedTask, session: Session) -> bool:
        return self.queue.complete(session=session, task=task, worker_id=self.worker_id)

    def _release(self, task: ClaimedTask, session: Session) -> bool:
        return self.queue.release(session=session, task=task, worker_id=self.worker_id)

    def _fail_task(self, task: ClaimedTask, error: str, session: Session) -> bool:
        outcome = self.queue.fail(session=session, task=task, worker_id=self.worker_id, error=error)
        return outcome is not FailOutcome.NOT_HELD
