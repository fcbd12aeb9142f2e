"""AsyncWorker: the Worker for asyncio, alive even while its event loop is blocked.

The process's liveness record is refreshed by :class:`jobledger.presence.Presence`
from a daemon thread, through the liveness backend's sync twin
(:meth:`AsyncLiveness.refresher`), exactly as the sync Worker does it. A task
body that blocks the event loop for minutes (a CPU-bound step, a blocking
library call) therefore cannot make a live process look dead; a process that
exits takes the thread with it, and its record lapses within one TTL.

Claims, takeovers of dead holders and duplicate deliveries follow the sync
Worker's rules, written once in :mod:`jobledger.claiming`, with each ledger and
liveness call awaited on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from .. import steps
from ..claiming import ClaimRules
from ..errors import LedgerError, StaleClaim
from ..policy import RecoveryPolicy
from ..presence import Presence
from ..records import Claim, JobStatus
from .ledger import AsyncLedger
from .liveness import AsyncLiveness

log = logging.getLogger("jobledger.worker")
_T = TypeVar("_T")


class AsyncWorker(ClaimRules):
    """Claims and works jobs under one process identity, from coroutines.

    ``async with AsyncWorker(ledger, liveness) as worker`` registers the identity
    and starts the refresh thread; leaving releases what is still held and
    unregisters. Many coroutines (and threads) may share one AsyncWorker.
    ``policy`` and ``grace`` are the sync Worker's. Signals are the application's:
    call :meth:`quiet` or :meth:`stop` from your own handlers.
    """

    def __init__(
        self,
        ledger: AsyncLedger,
        liveness: AsyncLiveness,
        *,
        identity: str | None = None,
        stop_timeout: float = 25.0,
        policy: RecoveryPolicy | None = None,
        grace: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.liveness = liveness
        ClaimRules.__init__(self, identity, liveness.ttl, grace, policy, stop_timeout)
        self._stopping = False
        self._presence = Presence(liveness.refresher(), self._info, self._watch)

    # -- starting and stopping ------------------------------------------------------------

    async def __aenter__(self) -> AsyncWorker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(timeout=0)

    async def start(self) -> AsyncWorker:
        """Register and start the refresh thread; ``LivenessUnavailable`` if it cannot."""
        if self._presence.running:
            raise RuntimeError(f"worker {self.identity} was already started")
        await asyncio.to_thread(self._presence.enter)  # registers through the sync twin
        log.info("worker %s started (ttl %.1fs)", self.identity, self.liveness.ttl)
        return self

    def quiet(self) -> None:
        """Stop claiming new jobs; keep working (and heartbeating) the ones held."""
        if not self._quiet:
            self._quiet = True
            log.info("worker %s is quiet: no new claims", self.identity)
            self._presence.publish()

    async def stop(self, timeout: float | None = None) -> None:
        """Quiet, wait up to ``timeout`` s (default ``stop_timeout``) for held jobs, release the
        rest, unregister."""
        if self._stopping:
            return
        self._stopping = True
        try:
            self.quiet()
            deadline = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
            while self._held and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for claim in list(self._held.values()):
                await self._release_on_stop(claim)
        finally:
            # Whatever happened above, this process stops looking alive.
            await asyncio.to_thread(self._presence.leave, self.identity)
        log.info("worker %s stopped", self.identity)

    async def _release_on_stop(self, claim: Claim) -> None:
        try:
            await self.release(claim, reason="worker stopping")
        except StaleClaim:
            log.warning("worker %s: claim on %s had been taken away", self.identity, claim.job_id)
        except LedgerError as exc:
            self._forget(claim)
            log.error(
                "worker %s could not release %s on stop (the recovery projector will "
                "abandon it once this process's record is gone): %s",
                self.identity,
                claim.job_id,
                exc,
            )

    # -- state ----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def presumed_dead(self) -> bool:
        return self._presence.presumed_dead

    # -- work -----------------------------------------------------------------------------

    async def claim(self, job_id: str, *, seen: JobStatus | None = None) -> Claim:
        """Claim ``job_id``; take it over if its holder is dead, ``AlreadyClaimed`` if alive.
        ``seen``: the job's row as its publisher saw it (``Ledger.claim``)."""
        return await self._drive(self._claim_steps(job_id, seen))

    async def claim_delivery(self, job_id: str, *, seen: JobStatus | None = None) -> Claim | None:
        """Claim ``job_id`` for a job system's delivery; ``None``: a duplicate, do not run it
        (as ``Worker.claim_delivery``)."""
        return await self._drive(self._delivery_steps(job_id, seen))

    async def _drive(self, rule: steps.Steps[_T]) -> _T:
        return await steps.drive_async(rule, ledger=self.ledger, liveness=self.liveness)

    async def heartbeat(self, claim: Claim, progress: Any = None) -> bool:
        """Record that the job is progressing (throttled by the ledger)."""
        return await self._finishing(claim, self.ledger.heartbeat(claim, progress), ends=False)

    async def complete(self, claim: Claim, result: Any = None) -> JobStatus:
        return await self._finishing(claim, self.ledger.complete(claim, result))

    async def fail(self, claim: Claim, error: str) -> JobStatus:
        return await self._finishing(claim, self.ledger.fail(claim, error))

    async def release(self, claim: Claim, reason: str | None = None) -> JobStatus:
        return await self._finishing(claim, self.ledger.release(claim, reason))

    async def _finishing(self, claim: Claim, command: Awaitable[_T], ends: bool = True) -> _T:
        try:
            result = await command
        except StaleClaim:
            self._forget(claim)
            raise
        if ends:
            self._forget(claim)
        return result
