"""taskiq: record every task of a broker in the ledger, from a middleware.

    broker = ListQueueBroker("redis://localhost:6379/0").with_middlewares(
        LedgerMiddleware("postgresql://localhost/app", redis_url="redis://localhost:6379/0")
    )

- ``task.kiq(...)`` (``pre_send``, in the publishing process): ``enqueued`` under the
  taskiq task id, with the task name, args and kwargs;
- a worker process starts (``startup``): one :class:`~jobledger.aio.worker.AsyncWorker`
  per process, whose identity stays alive from a thread, even while a task blocks the loop;
- a delivery runs (``pre_execute``): ``claimed`` (taken over from a dead holder, as
  ``Worker.claim`` does), then heartbeats while it runs;
- the task returns / raises (``post_execute``): ``completed`` / ``failed`` (the
  exception's type and message);
- the worker process stops (``shutdown``): what it still holds is released, and its
  identity unregisters.

A worker process killed mid-task stops refreshing its identity; the recovery projector
(``jobledger recover``) abandons the job within TTL + 2 s and requeues it by policy, and a
:class:`~jobledger.redelivery.Redeliverer` with a :class:`TaskiqTarget` publishes it again
under the same task id. A delivery of a job that is finished or held by a live process is
recorded as skipped (``rejected``) and not run: ``pre_execute`` raises
:class:`SkippedDelivery`, the only way a taskiq middleware has to stop a task (taskiq
logs it as the delivery's error). Not done yet: the CLI's ``--redeliver taskiq:...``
(build the Redeliverer in Python).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from ..aio import AsyncLedger, AsyncRedisLiveness, AsyncSqlLiveness, AsyncWorker
from ..aio.liveness import AsyncLiveness
from ..errors import LedgerError
from ..liveness.base import DEFAULT_TTL
from ..records import Claim, JobStatus

log = logging.getLogger("jobledger.taskiq")

#: The queue recorded for a task published without a ``queue_name`` label.
DEFAULT_QUEUE = "taskiq"
#: The label of a message the redeliverer publishes: the job is in the ledger already.
REDELIVERY_LABEL = "jobledger_redelivery"


class SkippedDelivery(Exception):
    """A duplicate delivery, recorded as skipped; raised in ``pre_execute`` so that taskiq
    does not run it."""


class LedgerMiddleware(TaskiqMiddleware):
    """Records the tasks of the broker it is added to (see the module's docstring).

    ``database_url`` is the ledger's (``postgresql://`` or a SQLite file);
    ``redis_url`` the liveness backend's (without it, SQL leases beside the ledger).
    ``heartbeat_every`` seconds a running task heartbeats (default a third of ``ttl``;
    the ledger throttles what it writes).
    """

    def __init__(
        self,
        database_url: str,
        redis_url: str | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        prefix: str = "jobledger",
        heartbeat_every: float | None = None,
    ) -> None:
        super().__init__()
        self.database_url, self.redis_url = database_url, redis_url
        self.ttl, self.prefix = ttl, prefix
        self.heartbeat_every = heartbeat_every if heartbeat_every is not None else ttl / 3
        self.ledger: AsyncLedger | None = None
        self.liveness: AsyncLiveness | None = None
        self.worker: AsyncWorker | None = None
        self._running: dict[str, tuple[Claim, asyncio.Task[None]]] = {}

    async def startup(self) -> None:
        self.ledger = AsyncLedger(self.database_url)
        if not self.broker.is_worker_process:
            return
        if self.redis_url:
            self.liveness = AsyncRedisLiveness(self.redis_url, ttl=self.ttl, prefix=self.prefix)
        else:
            self.liveness = AsyncSqlLiveness(self.ledger, ttl=self.ttl)
        self.worker = await AsyncWorker(self.ledger, self.liveness).start()

    async def shutdown(self) -> None:
        for _, beating in self._running.values():
            beating.cancel()
        if self.worker is not None:
            await self.worker.stop(timeout=0)
        if self.liveness is not None:
            await self.liveness.close()
        if self.ledger is not None:
            await self.ledger.close()

    async def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        """``enqueued``: the task is being published (not again when redelivered)."""
        if message.labels.get(REDELIVERY_LABEL):
            return message
        ledger = self.ledger or AsyncLedger(self.database_url)
        self.ledger = ledger
        queue = str(message.labels.get("queue_name") or DEFAULT_QUEUE)
        data = {"task": message.task_name, "args": message.args, "kwargs": message.kwargs}
        await ledger.enqueue(message.task_id, queue=queue, data=data)
        return message

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """``claimed``, or a recorded skip of a duplicate delivery (``SkippedDelivery``)."""
        worker = self.worker
        if worker is None:
            return message
        try:
            claim = await worker.claim_delivery(message.task_id)
        except LedgerError as exc:
            log.error("task %r: not recorded: %s", message.task_id, exc)
            return message
        if claim is None:
            log.info("task %r: duplicate delivery not run", message.task_id)
            raise SkippedDelivery(f"task {message.task_id!r}: duplicate delivery, not run")
        beating = asyncio.ensure_future(self._heartbeat(worker, claim))
        self._running[message.task_id] = (claim, beating)
        return message

    async def _heartbeat(self, worker: AsyncWorker, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_every)
            try:
                await worker.heartbeat(claim)
            except LedgerError as exc:  # stale, or the database away: the end decides
                log.warning("task %r: heartbeat: %s", claim.job_id, exc)
                return

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """``completed`` or ``failed``, by the result."""
        running = self._running.pop(message.task_id, None)
        if running is None or self.worker is None:
            return
        claim, beating = running
        beating.cancel()
        try:
            if result.is_err:
                error = result.error
                text = f"{type(error).__name__}: {error}" if error is not None else "failed"
                await self.worker.fail(claim, text)
            else:
                await self.worker.complete(claim)
        except LedgerError as exc:
            log.error("task %r: outcome not recorded: %s", claim.job_id, exc)


class TaskiqTarget:
    """Redelivery target: publishes requeued jobs to ``broker`` again, as the task, args and
    kwargs their ``enqueued`` event recorded, under the same task id.

    ``ledger_url`` is where those events are read. A repeated delivery publishes a second
    message; the worker that receives it finds the job claimed (or finished) and skips it.
    The target publishes on a loop of its own and shuts ``broker`` down when closed: give it
    a broker of its own (the redeliverer's process imports your app).
    """

    name = "taskiq"

    def __init__(self, broker: Any, ledger_url: str) -> None:
        from ..ledger import Ledger  # noqa: PLC0415 (the redeliverer's process only)

        self.broker = broker
        self.ledger = Ledger(ledger_url)
        # One loop for every delivery: the broker's connections belong to the loop that made them.
        self._loop = asyncio.new_event_loop()

    def deliver(self, job: JobStatus) -> None:
        recorded = self.ledger.history(job.job_id)[0].data.get("data") or {}
        name = recorded.get("task") if isinstance(recorded, dict) else None
        task = self.broker.find_task(name) if isinstance(name, str) else None
        if task is None:
            log.warning("job %r is no taskiq task this broker knows: not redelivered", job.job_id)
            return
        kicker = task.kicker().with_task_id(job.job_id).with_labels(**{REDELIVERY_LABEL: 1})
        args, kwargs = recorded.get("args", []), recorded.get("kwargs", {})
        self._loop.run_until_complete(kicker.kiq(*args, **kwargs))

    def close(self) -> None:
        self.ledger.close()
        try:  # its connections were made on our loop: only it can close them
            self._loop.run_until_complete(self.broker.shutdown())
        finally:
            self._loop.close()
