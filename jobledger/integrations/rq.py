"""RQ adapter: every RQ job's life recorded in jobledger, by the process that runs it.

RQ forks a *work horse* per job, and the horse is the process that works on the
job, so the horse is what jobledger tracks: it registers its own identity,
claims the job, heartbeats while it runs and completes or fails it. If the horse
and its parent are SIGKILLed, RQ keeps listing the job as started until its own
registry cleanup (minutes later); jobledger's recovery projector abandons it
once the horse's liveness record lapses.

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
from typing import Any

import redis
from rq import Queue
from rq import Worker as RQWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQJobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy import Engine

from ..database import DEFAULT_URL
from ..errors import AttemptsExhausted, InvalidTransition, LedgerError, UnknownJob
from ..ledger import Ledger
from ..liveness import DEFAULT_TTL, Liveness, liveness_for
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
            self.ledger.enqueue(job.id, queue=self.name, data={"rq_func": job.func_name})
        return super().enqueue_job(job, *args, **kwargs)


class LedgerWorker(RQWorker):
    """An RQ Worker whose work horses record their jobs in jobledger.

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

        # Built once in this (parent) process, before the first fork, and reused by every
        # horse: building them in each horse (imports of the driver, compiled statements,
        # the dialect's first-connect queries) cost a trivial job ~100 ms.
        self._ledger: Ledger | None = None
        self._liveness: Liveness | None = None

    def fork_work_horse(self, job: Any, queue: Any) -> None:
        self._prepared()
        super().fork_work_horse(job, queue)

    def _prepared(self) -> tuple[Ledger, Liveness]:
        """Build the ledger and liveness once; connect once to learn the server, then hang up.

        The parent keeps no connection open: each horse opens its own, since a
        connection inherited across fork() is shared with the parent's session.
        """
        if self._ledger is not None and self._liveness is not None:
            return self._ledger, self._liveness
        ledger = Ledger(self.database_url)
        try:
            ledger.prepare()
        except LedgerError as exc:  # each horse connects (and reports it) as before
            log.warning("ledger database not ready yet: %s", exc)
        self._ledger = ledger
        self._liveness = liveness_for(ledger, self.liveness_url, self.ttl)
        return self._ledger, self._liveness

    def perform_job(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> bool:
        # Runs in the forked horse, on the parent's prepared objects with fresh connections.
        ledger, liveness = self._prepared()  # built already, unless RQ did not fork
        _forget_inherited_connections(ledger, liveness)
        # A new database session costs milliseconds to open and warm: open it while
        # the Worker registers in liveness, not after.
        connecting = threading.Thread(target=_warm_up, args=(ledger,), daemon=True)
        connecting.start()
        try:
            with Worker(ledger, liveness) as recorder:
                connecting.join()
                claim = _claim(ledger, recorder, job.id, queue.name)
                if claim is None:  # a duplicate delivery: recorded, not run
                    self._skip_duplicate(job, queue, ledger.status(job.id).state, *args, **kwargs)
                    return True
                with Heartbeats(recorder):
                    succeeded: bool = super().perform_job(job, queue, *args, **kwargs)
                if succeeded:
                    recorder.complete(claim, result={"rq_status": "finished"})
                else:
                    recorder.fail(claim, error=_error_of(job))
                return succeeded
        finally:
            liveness.close()
            ledger.close()

    def _skip_duplicate(self, job: Any, queue: Any, state: str, *args: Any, **kwargs: Any) -> None:
        """End RQ's bookkeeping of a delivery the ledger refused, as a run would, minus the run.

        RQ's parent made an execution (in the StartedJobRegistry) and left the job in
        the queue's intermediate list; both go, or RQ's cleanup would later fail the
        job as stuck. A duplicate enqueue set RQ's status to queued: it is put back
        to what the ledger says (finished, canceled, or started while the holder
        runs), only if still queued, so a real outcome is never overwritten. RQ
        counts no failed (and no successful) job for the skip.
        """
        execution = args[0] if args else kwargs.get("execution")
        log.info("job %r: duplicate RQ delivery not run (job %s in the ledger)", job.id, state)
        with self.connection.pipeline() as pipeline:
            if len(self.queues) == 1:  # as RQ's own prepare_job_execution decides
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.execute()
        if state in _RQ_STATUS_OF:
            _restore_status(self.connection, job, _RQ_STATUS_OF[state])


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
        # Out of the registries first: a crash in between leaves the job to deliver again.
        with self.connection.pipeline() as pipeline:
            started.remove_executions(rq_job, pipeline=pipeline)
            failed.remove(rq_job, pipeline=pipeline)
            pipeline.execute()
        queue.enqueue_job(rq_job)  # watches the job's dependencies: not in our pipeline

    def close(self) -> None:
        self.connection.close()


def _claim(ledger: Ledger, recorder: Worker, job_id: str, queue: str) -> Claim | None:
    """Claim the RQ job, ``None`` for a duplicate delivery (see ``Worker.claim_delivery``);
    record it first if it was enqueued without LedgerQueue."""
    try:
        return recorder.claim_delivery(job_id)
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


def _warm_up(ledger: Ledger) -> None:
    try:
        ledger.warm_up()
    except Exception as exc:  # the claim connects again, and raises what stops it there
        log.debug("could not open the ledger connection ahead of the claim: %s", exc)


def _forget_inherited_connections(ledger: Ledger, liveness: Liveness) -> None:
    """Drop, without closing, pooled SQL connections this process may have inherited.

    Closing one would end the parent's session; using one would share it. (Redis
    clients notice the fork themselves and reconnect.)
    """
    ledger.engine.dispose(close=False)
    lease_engine = getattr(liveness, "engine", None)
    if isinstance(lease_engine, Engine) and lease_engine is not ledger.engine:
        lease_engine.dispose(close=False)


def _error_of(job: Any) -> str:
    result = job.latest_result() if hasattr(job, "latest_result") else None
    text = getattr(result, "exc_string", None) or "RQ job failed"
    return str(text).strip().splitlines()[-1][:2000]
