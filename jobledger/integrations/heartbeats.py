"""Job heartbeats from a thread while an integration runs the job in the main thread."""

from __future__ import annotations

import threading

from ..errors import LedgerError
from ..records import Claim
from ..worker import Worker

#: Seconds between job heartbeats while the job runs (the ledger throttles further).
HEARTBEAT_EVERY = 5.0


class Heartbeats:
    """Heartbeat ``claim`` every ``every`` seconds for the duration of a ``with`` block."""

    def __init__(self, recorder: Worker, claim: Claim, every: float = HEARTBEAT_EVERY) -> None:
        self.recorder, self.claim, self.every = recorder, claim, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="jobledger-heartbeats", daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.recorder.heartbeat(self.claim)
            except LedgerError:
                return  # the claim ended or was taken away: the job's outcome says the rest

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
