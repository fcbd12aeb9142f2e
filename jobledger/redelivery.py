"""The redelivery outbox: every ``requeued`` job is handed back to the job system that runs it.

A ``requeued`` event (the projector's policy or an operator's ``jobledger
requeue``) is the instruction to redeliver. The :class:`Redeliverer` reads the
events as a catch-up projection (:mod:`jobledger.catchup`), so it sees every
committed ``requeued`` event once, in order, with no gaps, and resumes from its
checkpoint after a crash. The checkpoint commits *after* the batch's deliveries:

- a delivery that fails (the broker is down) raises, the batch rolls back and
  the checkpoint stays before that event: it is delivered again on the retry;
- a crash after a delivery but before the commit delivers it again on restart.

So delivery is at-least-once; execution is once because the ledger lets one
process claim the job. Targets make a repeated delivery cheap: the RQ target
leaves a job alone that already waits in its queue. A ``requeued`` event that
is no longer the job's latest event (the job was claimed, cancelled or
requeued again since) is skipped: its delivery already happened, or a later
event will make it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sqlalchemy import Connection, select

from .catchup import CatchUp, Projection
from .errors import DatabaseUnavailable, RedeliveryFailed
from .lifecycle import EventType, State
from .observers import RecoveryObserver, observing
from .records import Event, JobStatus
from .runner import Runner
from .schema import jobs
from .storage.rows import status_from_row

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from .ledger import Ledger

log = logging.getLogger("jobledger.redelivery")

#: Events read per catch-up transaction; a failed delivery repeats at most this many.
BATCH_SIZE = 100
#: Longest wait between retries after a failed delivery, in seconds.
MAX_BACKOFF = 30.0


@runtime_checkable
class RedeliveryTarget(Protocol):
    """A job system the redeliverer hands requeued jobs back to.

    ``name`` keys the redeliverer's checkpoint: one checkpoint per target.
    ``deliver`` puts the job back in the job system's queue, or raises (any
    exception) to have it retried later. It may be called again for a job it
    already delivered, after a crash or a failure later in the same batch.
    """

    name: str

    def deliver(self, job: JobStatus) -> None: ...


class Redelivery(Projection):
    """The catch-up projection that calls ``target.deliver`` for each current ``requeued``."""

    def __init__(self, target: RedeliveryTarget, observer: RecoveryObserver | None = None) -> None:
        self.target = target
        self.name = f"redelivery:{target.name}"
        self.delivered = 0
        self.observer = observing(observer)

    def handle(self, event: Event, connection: Connection) -> None:
        if event.type != EventType.REQUEUED:
            return
        row = connection.execute(select(jobs).where(jobs.c.job_id == event.job_id)).one()
        job = status_from_row(row)
        if job.version != event.version or job.state != State.ENQUEUED:
            return  # handled since: claimed, cancelled or requeued again
        try:
            self.target.deliver(job)
        except Exception as exc:  # any failure of the target: retried from this event
            raise RedeliveryFailed(job.job_id, self.target.name, exc) from exc
        self.delivered += 1
        self.observer.redelivered(job.queue)
        log.info("job %r redelivered to %s", job.job_id, self.target.name)


class Redeliverer(Runner):
    """Delivers every requeued job to ``target``; run it beside the recovery projector.

    A :class:`~jobledger.runner.Runner`; closing it closes the target.
    """

    def __init__(
        self,
        source: Ledger | Engine,
        target: RedeliveryTarget,
        *,
        interval: float = 0.2,
        batch_size: int = BATCH_SIZE,
        handle_signals: bool | None = False,
        observer: RecoveryObserver | None = None,
    ) -> None:
        super().__init__(handle_signals=handle_signals)
        self.projection = Redelivery(target, observer)
        self.catchup = CatchUp(source, self.projection, batch_size=batch_size)
        self.interval = interval
        self._delay = interval  # until the next look; grows while deliveries fail

    def __str__(self) -> str:
        return f"redeliverer to {self.projection.target.name}"

    @property
    def delivered(self) -> int:
        """Deliveries made since this redeliverer started (repeats included)."""
        return self.projection.delivered

    def run_once(self) -> int:
        """Deliver every requeued job that can be now; raises ``RedeliveryFailed``."""
        return self.catchup.run_once()

    def run_forever(self) -> None:
        """Deliver until :meth:`stop`; after a failure, retry with a growing delay."""
        super().run_forever()

    def _starting(self) -> None:
        self._delay = self.interval

    def _round(self) -> float:
        try:
            self.run_once()
            self._delay = self.interval
        except (RedeliveryFailed, DatabaseUnavailable) as exc:
            self._delay = min(max(self._delay * 2, 1.0), MAX_BACKOFF)
            log.error("redelivery stopped at this event; retrying in %.1fs: %s", self._delay, exc)
        return self._delay

    def close(self) -> None:
        """Close the target's connections, if it has a ``close``."""
        close = getattr(self.projection.target, "close", None)
        if callable(close):
            close()
