"""Heartbeats for the jobs a job system runs: one thread per Worker, beside the task.

The task body runs elsewhere (an RQ horse, a Celery pool process's or thread's
task call), so a daemon thread heartbeats every claim the Worker holds. A claim
that ended or was taken away meanwhile is skipped: the task's own end (complete,
fail, ``StaleClaim``) says the rest.
"""

from __future__ import annotations

import contextlib
import threading

from ..errors import LedgerError
from ..worker import Worker

#: Seconds between heartbeats of running jobs (the ledger throttles what it records further).
HEARTBEAT_EVERY = 5.0


class Heartbeats:
    """Heartbeat every claim ``worker`` holds, every ``every`` s, until stopped or it stops."""

    def __init__(self, worker: Worker, every: float = HEARTBEAT_EVERY) -> None:
        self.worker, self.every = worker, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="jobledger-beats", daemon=True)

    def start(self) -> Heartbeats:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and wait for the thread; safe to call twice, or before :meth:`start`."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def __enter__(self) -> Heartbeats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _beat(self) -> None:
        while not self._stop.wait(self.every) and not self.worker.stopping:
            for claim in self.worker.held:
                with contextlib.suppress(LedgerError):
                    self.worker.heartbeat(claim)
