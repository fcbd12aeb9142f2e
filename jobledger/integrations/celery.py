"""Celery adapter: every Celery task's life recorded in jobledger, by the process that runs it.

Call :func:`record` once where the app is made, before the worker starts::

    app = Celery("shop", broker="amqp://...")
    record(app)      # JOBLEDGER_DATABASE_URL, JOBLEDGER_REDIS_URL, JOBLEDGER_TTL

The lifecycle, as recorded:

- publish (``before_task_publish``, in the publishing process): ``enqueued`` under
  the Celery task id, with the task name, queue, args and kwargs. Arguments that are
  not plain JSON are not stored (``"redeliverable": false``): such a task is
  recorded but cannot be redelivered by :class:`CeleryTarget`.
- run (in the process that runs the task: a prefork child, or the worker itself
  with the solo and threads pools): the process registers one identity, the run
  ``claimed`` (taking over from a dead holder as :meth:`Worker.claim` does),
  heartbeats while it runs, and ends ``completed`` or ``failed``.
- a task called as a function, or applied eagerly (``apply``, ``task_always_eager``),
  was never published: it runs unrecorded.
- a duplicate delivery (the task is completed or cancelled, or held by a live
  process) does not run the task body: it raises ``celery.exceptions.Ignore``, so
  Celery acknowledges the message and records nothing.
- ``self.retry()``: the claim is ``released`` (back to ``enqueued``) before the
  retry message is published, so the retry can be claimed wherever it lands.
- ``Reject(requeue=True)`` raised by a task with ``acks_late``: ``released``
  (the broker delivers the message again); without ``acks_late`` the message was
  acknowledged when it arrived and nothing will bring it back: ``failed``, saying
  so. ``Reject`` without requeue: ``failed``. ``Ignore`` raised by the task:
  ``completed``.
- revoked before it ran (or expired): ``cancelled``; revoked with
  ``terminate=True`` while running: ``failed`` ("terminated: ...") by the pool
  child as it exits, or, if it was killed outright (``signal="KILL"``),
  ``abandoned`` by the worker a second later; never requeued.
- a message the worker rejects (unknown task, undecodable): ``cancelled``.

Redelivery (``jobledger recover --redeliver celery:MODULE:ATTR``):
:class:`CeleryTarget` publishes a requeued task again with the same id, name,
arguments and queue.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from celery import Celery, signals
from celery.exceptions import Ignore, Reject, Retry

from .. import handoff
from ..database import DEFAULT_URL
from ..errors import (
    AttemptsExhausted,
    DuplicateJob,
    InvalidPayload,
    InvalidTransition,
    LedgerError,
    StaleClaim,
    UnknownJob,
)
from ..ledger import Ledger
from ..lifecycle import State
from ..liveness import DEFAULT_TTL, liveness_for
from ..records import Claim, JobStatus
from ..worker import Worker
from .heartbeats import Heartbeats

log = logging.getLogger("jobledger.integrations.celery")


def record(
    app: Celery,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    ttl: float | None = None,
) -> None:
    """Record every task ``app`` publishes and runs in jobledger.

    Settings default to ``JOBLEDGER_DATABASE_URL``, ``JOBLEDGER_REDIS_URL`` (SQL
    leases without it) and ``JOBLEDGER_TTL`` (seconds, default 15). Celery's
    signals are process-wide: record one app per process.
    """
    recorder = _Recorder(
        database_url or os.environ.get("JOBLEDGER_DATABASE_URL", DEFAULT_URL),
        redis_url or os.environ.get("JOBLEDGER_REDIS_URL"),
        ttl if ttl is not None else float(os.environ.get("JOBLEDGER_TTL", DEFAULT_TTL)),
    )
    # Celery builds each task's tracer from ``task.run`` after the app is finalized (in
    # the worker, and again in each prefork child): wrap ``run`` before that, as Celery's
    # own autoretry does, so the ledger decides whether a delivery runs the body.
    app.on_after_finalize.connect(lambda sender, **_: recorder.wrap_tasks(sender), weak=False)
    if app.finalized:
        recorder.wrap_tasks(app)
    signals.before_task_publish.connect(recorder.on_publish, weak=False)
    signals.worker_process_init.connect(recorder.on_process_init, weak=False)
    signals.worker_process_shutdown.connect(recorder.on_process_shutdown, weak=False)
    signals.worker_shutdown.connect(recorder.on_process_shutdown, weak=False)
    signals.task_revoked.connect(recorder.on_revoked, weak=False)
    signals.task_rejected.connect(recorder.on_rejected, weak=False)
    signals.task_unknown.connect(recorder.on_unknown, weak=False)


class CeleryTarget:
    """Redelivery target: publishes a requeued task again through ``app``.

    Same task id, name, args, kwargs and queue as recorded at publish. A task
    whose arguments were not stored (not plain JSON, or published before
    :func:`record`) cannot be redelivered: it is logged and skipped.
    """

    name = "celery"

    def __init__(self, app: Celery, ledger: Ledger) -> None:
        self.app, self.ledger = app, ledger

    def deliver(self, job: JobStatus) -> None:
        data = self._published(job.job_id)
        name = data.get("celery_task")
        if not isinstance(name, str) or not data.get("redeliverable"):
            log.warning("job %r has no redeliverable Celery message: not redelivered", job.job_id)
            return
        self.app.send_task(
            name,
            args=data.get("args") or [],
            kwargs=data.get("kwargs") or {},
            task_id=job.job_id,
            queue=job.queue,
            headers={handoff.HEADER: handoff.pack(job)},  # the row the worker claims from
        )

    def _published(self, job_id: str) -> dict[str, Any]:
        """The message as recorded at publish (the job's first event)."""
        first = self.ledger.history(job_id)[0]
        data = first.data.get("data") if isinstance(first.data, dict) else None
        return data if isinstance(data, dict) else {}


class _Recorder:
    """The ledger and the task-running :class:`Worker` of the current process."""

    def __init__(self, database_url: str, redis_url: str | None, ttl: float) -> None:
        self.database_url, self.redis_url, self.ttl = database_url, redis_url, ttl
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._ledger: Ledger | None = None
        self._worker: Worker | None = None

    # -- this process's ledger and worker --------------------------------------------------

    def ledger(self) -> Ledger:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's pooled connections are not ours to use.
                self._pid, self._ledger, self._worker = os.getpid(), None, None
            if self._ledger is None:
                self._ledger = Ledger(self.database_url)
            return self._ledger

    def worker(self) -> Worker:
        ledger = self.ledger()
        with self._lock:
            if self._worker is None:
                self._worker = Worker(ledger, liveness_for(ledger, self.redis_url, self.ttl))
                self._worker.start()
                # One thread per process beats every running task (the threads pool runs
                # many): cheaper than a thread started and joined around each task.
                Heartbeats(self._worker).start()
            return self._worker

    def on_process_init(self, **_: Any) -> None:
        self.worker()  # register the child's identity now, not at its first task

    def on_process_shutdown(self, **_: Any) -> None:
        with self._lock:
            if self._pid != os.getpid():
                return
            worker, ledger, self._worker, self._ledger = self._worker, self._ledger, None, None
        if worker is not None:
            worker.stop(timeout=0)
            worker.liveness.close()
        if ledger is not None:
            ledger.close()

    # -- publishing ------------------------------------------------------------------------

    def on_publish(
        self,
        sender: str | None = None,
        body: Any = None,
        headers: dict[str, Any] | None = None,
        routing_key: str | None = None,
        declare: list[Any] | None = None,
        **_: Any,
    ) -> None:
        headers = {} if headers is None else headers
        message = _Message.parse(sender, body, headers, routing_key, declare)
        if message is None:
            return
        try:
            if self._release_for_retry(message.task_id):
                return
            enqueued = self._enqueue(message)
            if enqueued is not None:  # Celery sends the headers as they are when we return
                headers[handoff.HEADER] = handoff.pack(enqueued)
        except LedgerError as exc:
            # Celery logs and swallows a failing signal handler; say what it means here.
            log.error("task %r published but not recorded: %s", message.task_id, exc)

    def _release_for_retry(self, task_id: str) -> bool:
        """Release our own claim on a task that publishes its retry, before the broker has it."""
        worker = self._worker if self._pid == os.getpid() else None
        held = [c for c in worker.held if c.job_id == task_id] if worker is not None else []
        if worker is None or not held:
            return False
        worker.release(held[0], reason="Celery retries the task")
        return True

    def _enqueue(self, message: _Message) -> JobStatus | None:
        """The job's row as recorded; ``None`` if it was recorded before."""
        ledger = self.ledger()
        try:
            return ledger.enqueue(message.task_id, queue=message.queue, data=message.data(True))
        except InvalidPayload:
            return ledger.enqueue(message.task_id, queue=message.queue, data=message.data(False))
        except DuplicateJob:
            return None  # published again (a redelivery, the same id sent twice): recorded

    # -- running ---------------------------------------------------------------------------

    def wrap_tasks(self, app: Celery) -> None:
        for task in app.tasks.values():
            if task.name.startswith("celery.") or getattr(task, "_jobledger_wrapped", False):
                continue  # Celery's own tasks (chord unlock, backend cleanup) are not jobs
            task.run = self._recorded(task, task.run)
            task._jobledger_wrapped = True

    def _recorded(self, task: Any, run: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(run)
        def run_recorded(*args: Any, **kwargs: Any) -> Any:
            request = task.request
            if request.id is None or request.called_directly or request.is_eager:
                return run(*args, **kwargs)  # called as a function or eagerly: not delivered
            worker = self.worker()
            seen = handoff.seen_in(getattr(request, handoff.HEADER, None), request.id)
            claim = self._claim_or_skip(worker, request.id, _queue_of(request), seen)
            try:
                result = run(*args, **kwargs)
            except BaseException as exc:
                self._ended_by(worker, claim, exc, acks_late=bool(task.acks_late))
                raise
            self._end(worker.complete, claim, {"celery_state": "SUCCESS"})
            return result

        return run_recorded

    def _claim_or_skip(
        self, worker: Worker, task_id: str, queue: str, seen: JobStatus | None
    ) -> Claim:
        """Claim the delivered task, or raise ``Ignore`` so its body does not run.

        A duplicate (the task completed or cancelled, or held by a process that is
        not dead) is recorded in the task's history by ``Worker.claim_delivery``.
        """
        ledger = worker.ledger
        try:
            claim = worker.claim_delivery(task_id, seen=seen)
        except UnknownJob:
            ledger.enqueue(task_id, queue=queue, data={"recorded": "at first claim"})
            claim = worker.claim_delivery(task_id)
        except AttemptsExhausted as exc:
            _skip(task_id, f"abandoned after {exc.attempt} attempts")
        except InvalidTransition as exc:
            if exc.state == State.ABANDONED:
                _skip(task_id, "left abandoned after its last allowed attempt")
            # failed: a task published again to run again; say so, then run it.
            ledger.requeue(task_id, reason="Celery runs the task again", process=worker.identity)
            claim = worker.claim_delivery(task_id)
        if claim is None:
            _skip(task_id, "a duplicate delivery (recorded in its history)")
        return claim

    def _ended_by(
        self, worker: Worker, claim: Claim, exc: BaseException, *, acks_late: bool
    ) -> None:
        if isinstance(exc, Retry):
            if claim in worker.held:  # the retry was not published through this app
                self._end(worker.release, claim, "Celery retries the task")
        elif isinstance(exc, Reject):
            if exc.requeue and acks_late:
                self._end(worker.release, claim, "rejected by the task and requeued")
            elif exc.requeue:  # acknowledged on arrival: the broker has nothing to requeue
                why = f"rejected by the task: {exc.reason} (not requeued: acks_late is off)"
                self._end(worker.fail, claim, why)
            else:
                self._end(worker.fail, claim, f"rejected by the task: {exc.reason}")
        elif isinstance(exc, SystemExit):  # the pool child is being terminated (a revoke)
            self._end(worker.fail, claim, f"terminated: {_error_text(exc)}")
        elif isinstance(exc, Ignore):
            self._end(worker.complete, claim, {"celery_state": "IGNORED"})
        else:
            self._end(worker.fail, claim, _error_text(exc))

    def _end(self, move: Callable[[Claim, Any], Any], claim: Claim, detail: Any) -> None:
        try:
            move(claim, detail)
        except StaleClaim as exc:
            # Taken away (this process was presumed dead); the task already ran, say so.
            log.error("task %r ran, but its claim had been taken away: %s", claim.job_id, exc)
        except LedgerError as exc:
            log.error("task %r ran, but its end was not recorded: %s", claim.job_id, exc)

    # -- revoked and rejected (in the worker's main process) -------------------------------

    def on_revoked(
        self, request: Any = None, terminated: bool = False, expired: bool = False, **_: Any
    ) -> None:
        task_id = getattr(request, "id", None)
        if isinstance(task_id, str):
            why = "expired" if expired else "revoked"
            self._withdraw(task_id, f"{why} in Celery", terminated)

    def on_rejected(self, message: Any = None, **_: Any) -> None:
        task_id = (getattr(message, "headers", None) or {}).get("id")
        if isinstance(task_id, str):
            self._withdraw(task_id, "rejected by the Celery worker", False)

    def on_unknown(self, id: Any = None, name: Any = None, **_: Any) -> None:
        if isinstance(id, str):
            self._withdraw(id, f"unknown to the Celery worker: {name!r}", False)

    def _withdraw(self, task_id: str, reason: str, terminated: bool) -> None:
        ledger = self.ledger()
        try:
            job = ledger.status(task_id)
            if job.state == State.ENQUEUED:
                ledger.cancel(task_id, reason=reason)
            elif job.state == State.CLAIMED and terminated and job.claim_token is not None:
                # Celery stopped the run: its child records the end if it lives long enough
                # (SIGTERM); if it does not (SIGKILL), abandoned here, never requeued.
                later = threading.Timer(
                    TERMINATED_GRACE, self._abandon_terminated, (task_id, job.claim_token, reason)
                )
                later.daemon = True
                later.start()
        except LedgerError as exc:
            log.error("task %r %s, but the ledger could not record it: %s", task_id, reason, exc)

    def _abandon_terminated(self, task_id: str, token: int, reason: str) -> None:
        try:
            self.ledger().abandon(task_id, token, reason)  # refused once the claim has ended
        except StaleClaim:
            pass  # the child recorded its end after all
        except LedgerError as exc:
            log.error("task %r %s, but the ledger could not record it: %s", task_id, reason, exc)


#: Seconds a terminated task's pool child gets to record its own end before the worker
#: abandons the claim for it.
TERMINATED_GRACE = 1.0


class _Message:
    """What ``before_task_publish`` says about a task message."""

    def __init__(self, task_id: str, name: str, queue: str, args: Any, kwargs: Any) -> None:
        self.task_id, self.name, self.queue = task_id, name, queue
        self.args, self.kwargs = args, kwargs

    @classmethod
    def parse(
        cls,
        sender: str | None,
        body: Any,
        headers: dict[str, Any],
        routing_key: str | None,
        declare: list[Any] | None,
    ) -> _Message | None:
        if "id" in headers:  # message protocol 2: body is (args, kwargs, embed)
            task_id, name = headers.get("id"), headers.get("task") or sender
            args, kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) else ((), {})
        elif isinstance(body, dict):  # protocol 1
            task_id, name = body.get("id"), body.get("task") or sender
            args, kwargs = body.get("args", ()), body.get("kwargs", {})
        else:
            return None
        if not isinstance(task_id, str) or not isinstance(name, str):
            return None
        queues = [getattr(q, "name", None) for q in declare or []]
        queue = next((q for q in queues if isinstance(q, str) and q), routing_key or "celery")
        return cls(task_id, name, queue, args, kwargs)

    def data(self, with_arguments: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"celery_task": self.name, "redeliverable": with_arguments}
        if with_arguments:
            data.update(args=list(self.args), kwargs=dict(self.kwargs))
        return data


def _skip(task_id: str, why: str) -> NoReturn:
    log.warning("duplicate delivery of task %r skipped: %s", task_id, why)
    raise Ignore(f"jobledger: {why}")


def _queue_of(request: Any) -> str:
    info = getattr(request, "delivery_info", None) or {}
    queue = info.get("routing_key") or "celery"
    return str(queue)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[-1][:2000] if text else type(exc).__name__
