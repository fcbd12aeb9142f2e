"""A Worker: a process identity that stays alive in the liveness backend while it works.

Staying alive is :mod:`jobledger.presence`'s (a refresh thread); ending a dead
holder's claim is :mod:`jobledger.takeover`'s, shared with the recovery projector.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from . import bounds, signals
from .errors import (
    AlreadyClaimed,
    AttemptsExhausted,
    ConcurrencyConflict,
    InvalidTransition,
    LedgerError,
    NotClaiming,
    StaleClaim,
)
from .identity import new_identity, parse
from .ledger import Ledger
from .lifecycle import TERMINAL_STATES
from .liveness.base import Liveness, ProcessInfo
from .liveness.trust import LifeWatch
from .policy import RecoveryPolicy
from .presence import Presence
from .records import Claim, JobStatus
from .takeover import end_dead_claim

log = logging.getLogger("jobledger.worker")

_T = TypeVar("_T")
#: How often :meth:`Worker.claim_delivery` looks again at a job that moved on under it.
_DELIVERY_LOOKS = 5


@dataclass(frozen=True, slots=True)
class _LiveHolder:
    """A claim refused because its holder is not dead, and why we think so."""

    taken: AlreadyClaimed
    why: str


class Worker:
    """Claims and works jobs under one process identity, kept alive by a refresh thread.

    Use it as a context manager: entering registers the identity and starts the
    refresh thread; leaving releases whatever is still held (at once: the block
    that would have finished it is over) and unregisters. ``handle_signals``
    follows :mod:`jobledger.signals` (``True``: main thread only; ``None``: if
    started there; default ``False``: a job system that runs the worker owns the
    signals): SIGTSTP makes the worker quiet and SIGTERM starts a graceful stop
    that gives held jobs up to ``stop_timeout`` seconds to finish; your loop
    should end when :attr:`stopping` becomes true.

    Thread safety: one Worker may serve many threads. ``claim``,
    ``claim_delivery``, ``heartbeat``, ``complete``, ``fail``, ``release``,
    ``quiet``, ``request_stop`` and ``stop`` may be called from any thread (the
    held claims sit behind a lock; the ledger and the liveness backend are safe to
    share). Two threads claiming the *same* job at once (a job system delivering it
    twice to one process) get one claim between them: the other gets
    ``AlreadyClaimed`` (``claim``) or a recorded skip (``claim_delivery``).
    Finishing one claim from two threads is safe: the ledger fences, and the later
    call gets ``StaleClaim``. Call :meth:`start` once.

    ``policy`` decides, as the recovery projector's does, whether a job taken
    over from a dead holder may run again (``max_attempts``); use the same one.
    A takeover follows the projector's rules too: the holder's claim must be
    older than ``grace`` seconds (default one TTL), its record missing at two
    looks, and the liveness backend trusted (not restarted, failed over or
    flushed within the last TTL); otherwise the claim raises ``AlreadyClaimed``.
    """

    def __init__(
        self,
        ledger: Ledger,
        liveness: Liveness,
        *,
        identity: str | None = None,
        handle_signals: bool | None = False,
        stop_timeout: float = 25.0,
        policy: RecoveryPolicy | None = None,
        grace: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.liveness = liveness
        self.policy = policy or RecoveryPolicy()
        # A NaN grace would make every claim look old enough to take over.
        self.grace = liveness.ttl if grace is None else bounds.seconds(grace, "grace", zero=True)
        self.identity = identity or new_identity()
        parsed = parse(self.identity)
        self.host, self.pid = parsed.host, parsed.pid
        self.started_at = datetime.now(timezone.utc)  # shown to operators, never compared
        self.stop_timeout = bounds.seconds(stop_timeout, "stop_timeout", zero=True)
        self._handle_signals = handle_signals
        self._held: dict[str, Claim] = {}
        self._claiming: dict[str, int] = {}  # job id -> this worker's claims of it in flight
        self._lock = threading.Lock()
        self._quiet = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._watch = LifeWatch(liveness.ttl, f"worker {self.identity}: no takeovers")
        self._presence = Presence(liveness, self._info, self._watch)
        self._previous_handlers: dict[int, signals.Handler] = {}

    def __repr__(self) -> str:
        return f"Worker({self.identity}, held={len(self._held)}, quiet={self._quiet})"

    # -- starting and stopping -----------------------------------------------------------

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=0)

    def start(self) -> Worker:
        """Register the identity and start refreshing; ``LivenessUnavailable`` if it cannot."""
        if self._presence.running:
            raise RuntimeError(f"worker {self.identity} was already started")
        self._previous_handlers = signals.install_for(
            self._handle_signals,
            {
                signal.SIGTSTP: lambda *_: self.quiet(),
                signal.SIGTERM: lambda *_: self.request_stop(),
            },
            "the Worker",
        )
        try:
            self._presence.enter()
        except BaseException:
            signals.restore(self._previous_handlers)
            raise
        log.info("worker %s started (ttl %.1fs)", self.identity, self.liveness.ttl)
        return self

    def quiet(self) -> None:
        """Stop claiming new jobs; keep working (and heartbeating) the ones held."""
        if not self._quiet:
            self._quiet = True
            log.info("worker %s is quiet: no new claims", self.identity)
            self._presence.publish()  # the quiet flag now, not at the next refresh

    def request_stop(self) -> None:
        """Begin a graceful stop in the background with ``stop_timeout`` (what SIGTERM does)."""
        if not self._stopping.is_set():
            stopper = threading.Thread(
                target=self.stop, args=(self.stop_timeout,), name="jobledger-stop", daemon=True
            )
            stopper.start()

    def stop(self, timeout: float | None = None) -> None:
        """Quiet, wait up to ``timeout`` s (default ``stop_timeout``) for held jobs, release the
        rest, unregister."""
        with self._lock:  # one stop runs; a second caller waits for it to end
            already = self._stopping.is_set()
            self._stopping.set()
        if already:
            self._stopped.wait()
            return
        try:
            self.quiet()
            deadline = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
            while self.held and time.monotonic() < deadline:
                time.sleep(0.05)
            for claim in self.held:
                self._release_on_stop(claim)
        finally:
            # Whatever happened above, this process stops looking alive: a job it could not
            # release is then recovered by the projector, not left claimed by a ghost.
            self._presence.leave(self.identity)
            signals.restore(self._previous_handlers)
            self._previous_handlers = {}
            self._stopped.set()
        log.info("worker %s stopped", self.identity)

    def _release_on_stop(self, claim: Claim) -> None:
        try:
            self.release(claim, reason="worker stopping")
            log.info("worker %s released %s on stop", self.identity, claim.job_id)
        except StaleClaim:
            log.warning(
                "worker %s: claim on %s had already been taken away", self.identity, claim.job_id
            )
        except LedgerError as exc:
            self._forget(claim)
            log.error(
                "worker %s could not release %s on stop (the recovery projector will "
                "abandon it once this process's record is gone): %s",
                self.identity,
                claim.job_id,
                exc,
            )

    # -- state ---------------------------------------------------------------------------

    @property
    def held(self) -> list[Claim]:
        """The claims this worker holds right now."""
        with self._lock:
            return list(self._held.values())

    @property
    def stopping(self) -> bool:
        """True once a stop has begun: end your work loop."""
        return self._stopping.is_set()

    @property
    def presumed_dead(self) -> bool:
        """True if the worker went silent for longer than the TTL and its record lapsed."""
        return self._presence.presumed_dead

    @property
    def claiming(self) -> bool:
        return not (self._quiet or self.presumed_dead or self._stopping.is_set())

    # -- work ----------------------------------------------------------------------------

    def claim(self, job_id: str, *, seen: JobStatus | None = None) -> Claim:
        """Claim ``job_id``; take it over if its holder is dead, ``AlreadyClaimed`` if alive.

        ``seen``: the job's row as its publisher saw it, as for :meth:`Ledger.claim`.
        """
        outcome = self._claim_or_holder(job_id, seen)
        if isinstance(outcome, _LiveHolder):
            raise outcome.taken
        return outcome

    def claim_delivery(self, job_id: str, *, seen: JobStatus | None = None) -> Claim | None:
        """Claim ``job_id`` for a delivery from a job system; ``None``: do not run it.

        What every integration calls when its job system hands it a job. The
        delivery is a duplicate, and ``None`` is returned, when the job is
        completed or cancelled, or claimed by a holder that is not dead (alive,
        or not yet presumed dead: see the takeover rules above). The skip is
        recorded in the job's history as a ``rejected`` event by this worker, with
        the reason (:meth:`Ledger.skip_delivery`); the caller acknowledges the
        message without running the task. Otherwise this is :meth:`claim`: an
        enqueued job is claimed, a dead holder's job taken over
        (``AttemptsExhausted`` as there). A failed or abandoned job raises
        ``InvalidTransition``, since whether a new delivery of it is a retry is
        the job system's call (requeue it first, then claim); a job never
        enqueued raises ``UnknownJob``. ``seen``: the row the message carried
        (:mod:`jobledger.handoff`), tried for the first look only.
        """
        for _ in range(_DELIVERY_LOOKS):
            try:
                outcome = self._claim_or_holder(job_id, seen)
            except InvalidTransition as refused:
                if refused.state not in TERMINAL_STATES:
                    raise
                outcome = None
            except AlreadyClaimed as taken:  # another process claimed it during our takeover
                outcome = _LiveHolder(taken, f"job was just claimed by {taken.holder}")
            if isinstance(outcome, Claim):
                return outcome
            token, why = (outcome.taken.token, outcome.why) if outcome else (None, "")
            skipped = self.ledger.skip_delivery(job_id, self.identity, holder_token=token, why=why)
            if skipped is not None:
                log.info("job %r: duplicate delivery skipped by %s", job_id, self.identity)
                return None
            # The job moved on between our look and the skip (released, requeued): look again.
            seen = None
        raise ConcurrencyConflict(job_id, self.ledger.status(job_id).version, "claimed")

    def _claim_or_holder(self, job_id: str, seen: JobStatus | None) -> Claim | _LiveHolder:
        """Our claim on ``job_id``, or its holder who is not dead (and why we think so)."""
        if not self.claiming:
            why = "presumed dead" if self.presumed_dead else "quiet or stopping"
            raise NotClaiming(f"worker {self.identity} is {why}; not claiming {job_id!r}")
        with self._lock:
            self._claiming[job_id] = self._claiming.get(job_id, 0) + 1
        try:
            try:
                claim = self._ledger_claim(job_id, seen)
            except AlreadyClaimed as taken:
                found = self._own_lost_claim(job_id, taken) or self._take_over(job_id, taken)
                if isinstance(found, _LiveHolder):
                    return found
                claim = found
            with self._lock:
                self._held[job_id] = claim
            return claim
        finally:
            with self._lock:
                if self._claiming[job_id] == 1:
                    del self._claiming[job_id]
                else:
                    self._claiming[job_id] -= 1

    def _ledger_claim(self, job_id: str, seen: JobStatus | None) -> Claim:
        if seen is None:  # the call as it was before seen=: a Ledger subclass may not take it
            return self.ledger.claim(job_id, self.identity)
        return self.ledger.claim(job_id, self.identity, seen=seen)

    def _own_lost_claim(self, job_id: str, taken: AlreadyClaimed) -> Claim | None:
        """Our own claim whose reply was lost (the connection broke after the commit), or
        ``None``. Without this the job would stay claimed by us, unworked, until we exit."""
        if taken.holder != self.identity or taken.token is None:
            return None
        with self._lock:
            # Claimed twice by the caller, or being claimed by another of its threads (whose
            # claim this is): AlreadyClaimed says so. Only a claim nobody here knows is lost.
            if job_id in self._held or self._claiming[job_id] > 1:
                return None
        status = self.ledger.status(job_id)
        if status.claimed_by != self.identity or status.claim_token != taken.token:
            return None
        log.warning("job %r: adopting this worker's own claim %d", job_id, taken.token)
        return Claim(job_id, taken.token, status.attempt, self.identity)

    def _take_over(self, job_id: str, taken: AlreadyClaimed) -> Claim | _LiveHolder:
        holder = taken.holder
        if holder is None or taken.token is None:
            raise taken
        alive = self._why_not_dead(holder, taken)
        if alive is not None:
            return _LiveHolder(taken, alive)
        log.warning(
            "job %r: holder %s is not alive; %s takes it over", job_id, holder, self.identity
        )
        reason = f"holder {holder} is not alive; taken over by {self.identity}"
        ended = end_dead_claim(
            self.ledger, job_id, taken.token, reason, by=self.identity, policy=self.policy
        )
        if ended is not None and not ended.requeued:
            raise AttemptsExhausted(job_id, holder, ended.status.attempt, ended.max_attempts)
        # Ended by us or, first, by someone else: the claim below says how the job stands.
        return self.ledger.claim(job_id, self.identity)

    def _why_not_dead(self, holder: str, taken: AlreadyClaimed) -> str | None:
        """``None`` if the holder is dead, else why not (for a skipped delivery's history).

        The projector's test: an old enough claim, no record at two looks, a trusted
        backend. The backend's incarnation is read after the first look, so a restart
        that emptied it just before that look is seen. Unknown liveness
        (``LivenessUnavailable``) propagates: a job is never taken on a guess.
        """
        if holder == self.identity:
            return f"job is claimed by this process ({holder})"
        if taken.held_for is None or taken.held_for < self.grace:
            return f"job is claimed by {holder}, too recently to presume it dead"
        if self.liveness.alive([holder])[holder]:
            return f"job is claimed by live process {holder}"
        if not self._watch.trusts(self.liveness.incarnation()):
            log.info("job %r: liveness cannot be trusted yet; not taking it over", taken.job_id)
            return f"job is claimed by {holder}; liveness cannot be trusted yet"
        if self.liveness.alive([holder])[holder]:
            return f"job is claimed by live process {holder}"
        return None

    def heartbeat(self, claim: Claim, progress: Any = None) -> bool:
        """Record that the job is progressing (throttled by the ledger)."""
        return self._finishing(claim, lambda: self.ledger.heartbeat(claim, progress), ends=False)

    def complete(self, claim: Claim, result: Any = None) -> JobStatus:
        return self._finishing(claim, lambda: self.ledger.complete(claim, result))

    def fail(self, claim: Claim, error: str) -> JobStatus:
        return self._finishing(claim, lambda: self.ledger.fail(claim, error))

    def release(self, claim: Claim, reason: str | None = None) -> JobStatus:
        return self._finishing(claim, lambda: self.ledger.release(claim, reason))

    def _finishing(self, claim: Claim, command: Callable[[], _T], ends: bool = True) -> _T:
        try:
            result = command()
        except StaleClaim:
            self._forget(claim)
            raise
        if ends:
            self._forget(claim)
        return result

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            if self._held.get(claim.job_id) == claim:
                del self._held[claim.job_id]

    # -- staying alive -------------------------------------------------------------------

    def _info(self) -> ProcessInfo:
        return ProcessInfo(
            identity=self.identity,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            quiet=self._quiet or self._stopping.is_set(),
            busy=len(self._held),
        )
