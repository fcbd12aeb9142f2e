"""AsyncWorker: the Worker for asyncio, alive even while its event loop is blocked.

The process's liveness record is refreshed by :class:`jobledger.presence.Presence`
from a daemon thread, through the liveness backend's sync twin
(:meth:`AsyncLiveness.refresher`), exactly as the sync Worker does it. A task
body that blocks the event loop for minutes (a CPU-bound step, a blocking
library call) therefore cannot make a live process look dead; a process that
exits takes the thread with it, and its record lapses within one TTL.

Claims, takeovers of dead holders and duplicate deliveries follow the sync
Worker's rules (see :class:`jobledger.worker.Worker`), with the liveness checks
awaited on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import Any, TypeVar

from .. import bounds
from ..errors import (
    AlreadyClaimed,
    AttemptsExhausted,
    ConcurrencyConflict,
    InvalidTransition,
    LedgerError,
    NotClaiming,
    StaleClaim,
)
from ..identity import new_identity, parse
from ..lifecycle import TERMINAL_STATES
from ..liveness.base import ProcessInfo
from ..liveness.trust import LifeWatch
from ..policy import RecoveryPolicy
from ..presence import Presence
from ..records import Claim, JobStatus
from ..takeover import Ended
from ..worker import _DELIVERY_LOOKS, _LiveHolder
from .ledger import AsyncLedger
from .liveness import AsyncLiveness

log = logging.getLogger("jobledger.worker")
recovery_log = logging.getLogger("jobledger.recovery")
_T = TypeVar("_T")


class AsyncWorker:
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
        self.policy = policy or RecoveryPolicy()
        self.grace = liveness.ttl if grace is None else bounds.seconds(grace, "grace", zero=True)
        self.identity = identity or new_identity()
        parsed = parse(self.identity)
        self.host, self.pid = parsed.host, parsed.pid
        self.started_at = datetime.now(timezone.utc)  # shown to operators, never compared
        self.stop_timeout = bounds.seconds(stop_timeout, "stop_timeout", zero=True)
        self._held: dict[str, Claim] = {}
        self._claiming: dict[str, int] = {}  # job id -> claims of it in flight here
        self._quiet = False
        self._stopping = False
        self._watch = LifeWatch(liveness.ttl, f"worker {self.identity}: no takeovers")
        self._presence = Presence(liveness.refresher(), self._info, self._watch)

    def __repr__(self) -> str:
        return f"AsyncWorker({self.identity}, held={len(self._held)}, quiet={self._quiet})"

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
    def held(self) -> list[Claim]:
        return list(self._held.values())

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def presumed_dead(self) -> bool:
        return self._presence.presumed_dead

    @property
    def claiming(self) -> bool:
        return not (self._quiet or self.presumed_dead or self._stopping)

    # -- work -----------------------------------------------------------------------------

    async def claim(self, job_id: str, *, seen: JobStatus | None = None) -> Claim:
        """Claim ``job_id``; take it over if its holder is dead, ``AlreadyClaimed`` if alive.
        ``seen``: the job's row as its publisher saw it (``Ledger.claim``)."""
        outcome = await self._claim_or_holder(job_id, seen)
        if isinstance(outcome, _LiveHolder):
            raise outcome.taken
        return outcome

    async def claim_delivery(self, job_id: str, *, seen: JobStatus | None = None) -> Claim | None:
        """Claim ``job_id`` for a job system's delivery; ``None``: a duplicate, do not run it
        (as ``Worker.claim_delivery``)."""
        for _ in range(_DELIVERY_LOOKS):
            try:
                outcome: Claim | _LiveHolder | None = await self._claim_or_holder(job_id, seen)
            except InvalidTransition as refused:
                if refused.state not in TERMINAL_STATES:
                    raise
                outcome = None
            except AlreadyClaimed as taken:
                outcome = _LiveHolder(taken, f"job was just claimed by {taken.holder}")
            if isinstance(outcome, Claim):
                return outcome
            token, why = (outcome.taken.token, outcome.why) if outcome else (None, "")
            skipped = await self.ledger.skip_delivery(
                job_id, self.identity, holder_token=token, why=why
            )
            if skipped is not None:
                log.info("job %r: duplicate delivery skipped by %s", job_id, self.identity)
                return None
            seen = None  # the job moved on since: look again, reading it
        raise ConcurrencyConflict(job_id, (await self.ledger.status(job_id)).version, "claimed")

    async def _claim_or_holder(self, job_id: str, seen: JobStatus | None) -> Claim | _LiveHolder:
        if not self.claiming:
            why = "presumed dead" if self.presumed_dead else "quiet or stopping"
            raise NotClaiming(f"worker {self.identity} is {why}; not claiming {job_id!r}")
        self._claiming[job_id] = self._claiming.get(job_id, 0) + 1
        try:
            try:
                claim = await self.ledger.claim(job_id, self.identity, seen=seen)
            except AlreadyClaimed as taken:
                found = await self._own_lost_claim(job_id, taken) or await self._take_over(
                    job_id, taken
                )
                if isinstance(found, _LiveHolder):
                    return found
                claim = found
            self._held[job_id] = claim
            return claim
        finally:
            if self._claiming[job_id] == 1:
                del self._claiming[job_id]
            else:
                self._claiming[job_id] -= 1

    async def _own_lost_claim(self, job_id: str, taken: AlreadyClaimed) -> Claim | None:
        """Our own claim whose reply was lost, or ``None`` (``Worker._own_lost_claim``)."""
        if taken.holder != self.identity or taken.token is None:
            return None
        if job_id in self._held or self._claiming[job_id] > 1:
            return None
        status = await self.ledger.status(job_id)
        if status.claimed_by != self.identity or status.claim_token != taken.token:
            return None
        log.warning("job %r: adopting this worker's own claim %d", job_id, taken.token)
        return Claim(job_id, taken.token, status.attempt, self.identity)

    async def _take_over(self, job_id: str, taken: AlreadyClaimed) -> Claim | _LiveHolder:
        holder = taken.holder
        if holder is None or taken.token is None:
            raise taken
        alive = await self._why_not_dead(holder, taken)
        if alive is not None:
            return _LiveHolder(taken, alive)
        log.warning(
            "job %r: holder %s is not alive; %s takes it over", job_id, holder, self.identity
        )
        reason = f"holder {holder} is not alive; taken over by {self.identity}"
        ended = await self._end_dead_claim(job_id, taken.token, reason)
        if ended is not None and not ended.requeued:
            raise AttemptsExhausted(job_id, holder, ended.status.attempt, ended.max_attempts)
        return await self.ledger.claim(job_id, self.identity)

    async def _end_dead_claim(self, job_id: str, token: int, reason: str) -> Ended | None:
        """:func:`jobledger.takeover.end_dead_claim`, awaited."""
        try:
            after = await self.ledger.abandon(
                job_id, token, reason, process=self.identity, policy=self.policy
            )
        except StaleClaim:
            recovery_log.info("job %r: claim %d already ended; nothing to do", job_id, token)
            return None
        ended = Ended(after, self.policy.attempts_for(after.queue))
        if not ended.requeued:
            recovery_log.warning(
                "job %r reached %d attempts: left abandoned", job_id, ended.max_attempts
            )
        return ended

    async def _why_not_dead(self, holder: str, taken: AlreadyClaimed) -> str | None:
        """``None`` if the holder is dead, else why not (``Worker._why_not_dead``)."""
        if holder == self.identity:
            return f"job is claimed by this process ({holder})"
        if taken.held_for is None or taken.held_for < self.grace:
            return f"job is claimed by {holder}, too recently to presume it dead"
        if (await self.liveness.alive([holder]))[holder]:
            return f"job is claimed by live process {holder}"
        if not self._watch.trusts(await self.liveness.incarnation()):
            log.info("job %r: liveness cannot be trusted yet; not taking it over", taken.job_id)
            return f"job is claimed by {holder}; liveness cannot be trusted yet"
        if (await self.liveness.alive([holder]))[holder]:
            return f"job is claimed by live process {holder}"
        return None

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

    def _forget(self, claim: Claim) -> None:
        if self._held.get(claim.job_id) == claim:
            del self._held[claim.job_id]

    # -- staying alive --------------------------------------------------------------------

    def _info(self) -> ProcessInfo:
        """The record's contents; called from the refresh thread (reads plain attributes)."""
        return ProcessInfo(
            identity=self.identity,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            quiet=self._quiet or self._stopping,
            busy=len(self._held),
        )
