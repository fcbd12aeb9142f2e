"""RQ adapter: every RQ job's life recorded in jobledger, by the worker that runs it.

RQ forks a *work horse* per job. The RQ worker (the long-lived parent) is the
process jobledger tracks: it registers one identity, claims each job before it
forks the horse, heartbeats while the horse runs, and completes or fails the job
when the horse exits. The horse dies with its worker (``PR_SET_PDEATHSIG``), so a
claim held by a dead worker means that nobody runs the job: jobledger's recovery
projector abandons it once the worker's liveness record lapses, while RQ keeps
listing the job as started until its own registry cleanup (minutes later).

Producer side::

    queue = LedgerQueue("default", connection=redis, ledger=Ledger(url))
    queue.enqueue(send_invoice, 42)          # also recorded as `enqueued`

Worker side (settings from the environment, as for the jobledger CLI)::

    JOBLEDGER_DATABASE_URL=... JOBLEDGER_REDIS_URL=... JOBLEDGER_TTL=15 \\
        rq worker --worker-class jobledger.integrations.rq.LedgerWorker default

Redelivery (``jobledger recover --redeliver rq``): :class:`RQTarget` puts each
job the ledger requeued back on its RQ queue, as RQ's own requeue would.
"""

from __future__ import annotations

import logging
import os
import threading
from queue import SimpleQueue
from typing import Any

import redis
from rq import Queue
from rq import Worker as RQWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQJobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.worker import WorkerStatus

from .. import handoff
from ..children import die_with_parent
from ..database import DEFAULT_URL
from ..errors import AttemptsExhausted, InvalidTransition, LedgerError, UnknownJob
from ..ledger import Ledger
from ..liveness import DEFAULT_TTL, liveness_for
from ..records import Claim, JobStatus
from ..worker import Worker
from .heartbeats import Heartbeats

log = logging.getLogger("jobledger.integrations.rq")


class LedgerQueue(Queue):
    """An RQ Queue that records every job it enqueues in ``ledger``."""

    def __init__(self, *args: Any, ledger: Ledger | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ledger = ledger

    def enqueue_job(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        if self.ledger is not None:
            enqueued = self.ledger.enqueue(job.id, queue=self.name, data={"rq_func": job.func_name})
            job.meta[handoff.HEADER] = handoff.pack(enqueued)  # the row the worker claims from
        return super().enqueue_job(job, *args, **kwargs)


class LedgerWorker(RQWorker):
    """An RQ Worker that records each job its work horses run in jobledger.

    The worker (the long-lived parent) is the process jobledger tracks: it
    registers one identity, claims each job before forking the horse, heartbeats
    while the horse runs and completes or fails the job once the horse has
    exited (the horse reports its outcome through a pipe). A horse killed alone
    is a failure the worker sees at once (as RQ does); the horse dies with its
    worker, so a dead worker's claim means nobody runs the job, and the recovery
    projector abandons it once the worker's liveness record lapses. Horses never
    touch the database or liveness.

    Settings default to ``JOBLEDGER_DATABASE_URL``, ``JOBLEDGER_REDIS_URL``
    (SQL leases without it) and ``JOBLEDGER_TTL`` (seconds, default 15).
    """

    def __init__(
        self,
        *args: Any,
        database_url: str | None = None,
        liveness_url: str | None = None,
        ttl: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.database_url = database_url or os.environ.get("JOBLEDGER_DATABASE_URL", DEFAULT_URL)
        self.liveness_url = liveness_url or os.environ.get("JOBLEDGER_REDIS_URL")
        self.ttl = ttl if ttl is not None else float(os.environ.get("JOBLEDGER_TTL", DEFAULT_TTL))
        self._recorder: Worker | None = None
        self._heartbeats: Heartbeats | None = None
        self._finisher: _Finisher | None = None
        self._outcome: _Outcome | None = None
        self._worker_pid = os.getpid()

    # -- in the worker (parent) ----------------------------------------------------------

    def execute_job(self, job: Any, queue: Any) -> None:
        recorder = self._started_recorder()
        assert self._finisher is not None
        self._finisher.wait_for(job.id)  # an RQ retry of a job whose failure is being recorded
        try:
            seen = handoff.seen_in(job.meta.get(handoff.HEADER), job.id)
            claim = _claim(recorder.ledger, recorder, job.id, queue.name, seen)
        except LedgerError as exc:
            log.error("job %r not run: jobledger could not record its claim: %s", job.id, exc)
            self._end_without_run(job, queue, failure=f"jobledger could not claim the job: {exc}")
            return
        if claim is None:  # a duplicate delivery: recorded, not run
            state = recorder.ledger.status(job.id).state
            log.info("job %r: duplicate RQ delivery not run (job %s in the ledger)", job.id, state)
            self._end_without_run(job, queue, restore=_RQ_STATUS_OF.get(state))
            return
        self._worker_pid = os.getpid()
        self._outcome = _Outcome()
        try:
            super().execute_job(job, queue)
            succeeded, error = self._outcome.read()
        finally:
            self._outcome.close()
            self._outcome = None
        finisher = self._finisher
        assert finisher is not None
        finisher.finish(claim, succeeded, error or (None if succeeded else _error_of(job)))

    def fork_work_horse(self, job: Any, queue: Any) -> None:
        super().fork_work_horse(job, queue)  # returns in the parent only
        if self._outcome is not None:
            self._outcome.forked()

    def teardown(self) -> None:
        if not self.is_horse:
            self._stop_recorder()
        super().teardown()  # type: ignore[no-untyped-call]

    def _started_recorder(self) -> Worker:
        """This worker's jobledger identity, registered and refreshed from a thread."""
        if self._recorder is None:
            ledger = Ledger(self.database_url)
            liveness = liveness_for(ledger, self.liveness_url, self.ttl)
            try:
                self._recorder = Worker(ledger, liveness).start()
            except BaseException:
                liveness.close()
                ledger.close()
                raise
            # Heartbeats the claim while a horse runs (between jobs the worker holds none).
            self._heartbeats = Heartbeats(self._recorder).start()
            self._finisher = _Finisher(self._recorder)
        return self._recorder

    def _stop_recorder(self) -> None:
        recorder, self._recorder = self._recorder, None
        heartbeats, self._heartbeats = self._heartbeats, None
        finisher, self._finisher = self._finisher, None
        if finisher is not None:
            finisher.stop()  # records every outcome still waiting first
        if heartbeats is not None:
            heartbeats.stop()
        if recorder is not None:
            try:
                recorder.stop(timeout=0)
            finally:
                recorder.liveness.close()
                recorder.ledger.close()

    def _end_without_run(
        self,
        job: Any,
        queue: Any,
        *,
        failure: str | None = None,
        restore: RQJobStatus | None = None,
    ) -> None:
        """End RQ's bookkeeping of a dequeued job that no horse will run.

        The job leaves the queue's intermediate list (where RQ's dequeue put it).
        A ``failure`` fails it in RQ, as a crashed horse would. Otherwise it is a
        skipped duplicate: a duplicate enqueue set RQ's status to queued, which goes
        back to ``restore`` (what the ledger says: finished, canceled, or started
        while the holder runs), only if still queued, so a real outcome is never
        overwritten; RQ counts neither a failed nor a successful job for it.
        """
        if len(self.queues) == 1:  # RQ dequeues through the intermediate list then
            self.connection.lrem(queue.intermediate_queue_key, 1, job.id)
        if failure is not None:
            self.handle_job_failure(job, queue=queue, exc_string=failure)
        elif restore is not None:
            _restore_status(self.connection, job, restore)
        self.set_state(WorkerStatus.IDLE)

    # -- in the work horse -----------------------------------------------------------------

    def main_work_horse(self, job: Any, queue: Any) -> None:
        # A horse that outlived its worker would run on under a claim the ledger
        # believes dead, and the job would run twice once recovered.
        die_with_parent(self._worker_pid)
        super().main_work_horse(job, queue)

    def perform_job(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> bool:
        succeeded: bool = super().perform_job(job, queue, *args, **kwargs)
        if self._outcome is not None:
            self._outcome.report(succeeded, None if succeeded else _error_of(job))
        return succeeded


class _Finisher:
    """Records how each job ended on a thread of its own, so that the worker takes its
    next job meanwhile (the record's round trip overlaps RQ's dequeue).

    A worker SIGKILLed in the millisecond between a horse's exit and the record
    leaves the job claimed by a dead process: it is abandoned and runs again, as
    when the kill comes just before the horse's exit.
    """

    def __init__(self, recorder: Worker) -> None:
        self.recorder = recorder
        self._pending: SimpleQueue[tuple[Claim, bool, str | None] | None] = SimpleQueue()
        self._unfinished: set[str] = set()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="jobledger-finish", daemon=True)
        self._thread.start()

    def finish(self, claim: Claim, succeeded: bool, error: str | None) -> None:
        with self._done:
            self._unfinished.add(claim.job_id)
        self._pending.put((claim, succeeded, error))

    def wait_for(self, job_id: str) -> None:
        """Return once no outcome of ``job_id`` waits to be recorded."""
        with self._done:
            self._done.wait_for(lambda: job_id not in self._unfinished)

    def stop(self) -> None:
        self._pending.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._pending.get()) is not None:
            claim, succeeded, error = item
            try:
                if succeeded:
                    self.recorder.complete(claim, result={"rq_status": "finished"})
                else:
                    self.recorder.fail(claim, error=error or "RQ job failed")
            except LedgerError as exc:  # StaleClaim's `rejected` event is in the history
                log.error("job %r: jobledger could not record how it ended: %s", claim.job_id, exc)
            except Exception:
                log.exception("job %r: recording how it ended failed", claim.job_id)
            finally:
                with self._done:
                    self._unfinished.discard(claim.job_id)
                    self._done.notify_all()


class _Outcome:
    """A pipe through which a horse tells its worker whether the job succeeded."""

    def __init__(self) -> None:
        self._read_end, self._write_end = os.pipe()

    def forked(self) -> None:
        """In the parent, after the fork: only the horse writes."""
        os.close(self._write_end)
        self._write_end = -1

    def report(self, succeeded: bool, error: str | None) -> None:
        """In the horse: one short write (well under the pipe's buffer), before it exits."""
        message = ("ok" if succeeded else "failed\n" + (error or "")).encode()
        os.write(self._write_end, message[:4000])

    def read(self) -> tuple[bool, str | None]:
        """In the parent, after the horse exited: its report, or a failure if it sent none."""
        chunks = []
        while chunk := os.read(self._read_end, 4096):
            chunks.append(chunk)
        message = b"".join(chunks).decode(errors="replace")
        if message == "ok":
            return True, None
        _, _, error = message.partition("\n")
        return False, error or None

    def close(self) -> None:
        for fd in (self._read_end, self._write_end):
            if fd >= 0:
                os.close(fd)
        self._read_end = self._write_end = -1


#: The RQ status a skipped duplicate leaves, by the job's state in the ledger.
_RQ_STATUS_OF = {
    "completed": RQJobStatus.FINISHED,
    "cancelled": RQJobStatus.CANCELED,
    "claimed": RQJobStatus.STARTED,
}


def _restore_status(connection: Any, job: Any, status: RQJobStatus) -> None:
    """Set ``job``'s RQ status to ``status`` if it is still ``queued`` (a duplicate's doing)."""
    with connection.pipeline() as pipeline:
        try:
            pipeline.watch(job.key)
            if pipeline.hget(job.key, "status") != RQJobStatus.QUEUED.value.encode():
                return
            pipeline.multi()
            pipeline.hset(job.key, "status", status.value)
            pipeline.execute()
        except redis.WatchError:
            pass  # the job moved on (its run ended): that outcome stands


class RQTarget:
    """Redelivery target: hands requeued jobs back to RQ through the Redis at ``url``.

    The job goes back on its RQ queue (``origin``) with RQ's own data, and leaves
    RQ's started and failed registries, so RQ and the ledger agree again. A job
    already waiting in its queue is left alone (a repeated delivery). A job RQ
    does not know (never enqueued through RQ, or expired) cannot be redelivered:
    it is logged and skipped, since retrying would not bring it back.
    """

    name = "rq"

    def __init__(self, url: str) -> None:
        self.connection = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)

    def deliver(self, job: JobStatus) -> None:
        try:
            rq_job = Job.fetch(job.job_id, connection=self.connection)
        except NoSuchJobError:
            log.warning("job %r is not known to RQ: not redelivered", job.job_id)
            return
        queue = Queue(rq_job.origin, connection=self.connection, serializer=rq_job.serializer)
        waiting = self.connection.lpos(queue.key, job.job_id) is not None
        if rq_job.get_status() == RQJobStatus.QUEUED and waiting:
            return  # delivered before (a retried batch, or a crash before the checkpoint)
        started = StartedJobRegistry(queue.name, connection=self.connection)
        failed = FailedJobRegistry(queue.name, connection=self.connection)
        rq_job.started_at = rq_job.ended_at = None
        rq_job.meta[handoff.HEADER] = handoff.pack(job)  # the row the worker claims from
        # Out of the registries first: a crash in between leaves the job to deliver again.
        with self.connection.pipeline() as pipeline:
            started.remove_executions(rq_job, pipeline=pipeline)
            failed.remove(rq_job, pipeline=pipeline)
            pipeline.execute()
        queue.enqueue_job(rq_job)  # watches the job's dependencies: not in our pipeline

    def close(self) -> None:
        self.connection.close()


def _claim(
    ledger: Ledger, recorder: Worker, job_id: str, queue: str, seen: JobStatus | None
) -> Claim | None:
    """Claim the RQ job, ``None`` for a duplicate delivery (see ``Worker.claim_delivery``);
    record it first if it was enqueued without LedgerQueue."""
    try:
        return recorder.claim_delivery(job_id, seen=seen)
    except UnknownJob:
        ledger.enqueue(job_id, queue=queue, data={"recorded": "at first claim"})
    except InvalidTransition as exc:
        if exc.state not in ("failed", "abandoned"):
            raise
        ledger.requeue(job_id, reason="RQ runs the job again", process=recorder.identity)
    except AttemptsExhausted:
        # RQ decided to run it again (a retry, or an operator's requeue); record that.
        ledger.requeue(job_id, reason="RQ runs the job again", process=recorder.identity)
    return recorder.claim_delivery(job_id)


def _error_of(job: Any) -> str:
    result = job.latest_result() if hasattr(job, "latest_result") else None
    text = getattr(result, "exc_string", None) or "RQ job failed"
    return str(text).strip().splitlines()[-1][:2000]
