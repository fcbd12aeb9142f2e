"""A Worker: a process identity that stays alive in the liveness backend while it works.

Staying alive is :mod:`jobledger.presence`'s (a refresh thread); the claim rules
(takeover, duplicate deliveries) are :mod:`jobledger.claiming`'s, shared with the
AsyncWorker; ending a dead holder's claim is :mod:`jobledger.takeover`'s, shared
with the recovery projector.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import signals, steps
from .claiming import ClaimRules
from .errors import LedgerError, StaleClaim
from .ledger import Ledger
from .liveness.base import Liveness
from .policy import RecoveryPolicy
from .presence import Presence
from .records import Claim, JobStatus

log = logging.getLogger("jobledger.worker")

_T = TypeVar("_T")


class Worker(ClaimRules):
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
        ClaimRules.__init__(self, identity, liveness.ttl, grace, policy, stop_timeout)
        self._handle_signals = handle_signals
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._presence = Presence(liveness, self._info, self._watch)
        self._previous_handlers: dict[int, signals.Handler] = {}

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
    def stopping(self) -> bool:
        """True once a stop has begun: end your work loop."""
        return self._stopping.is_set()

    @property
    def presumed_dead(self) -> bool:
        """True if the worker went silent for longer than the TTL and its record lapsed."""
        return self._presence.presumed_dead

    # -- work ----------------------------------------------------------------------------

    def claim(self, job_id: str, *, seen: JobStatus | None = None) -> Claim:
        """Claim ``job_id``; take it over if its holder is dead, ``AlreadyClaimed`` if alive.

        ``seen``: the job's row as its publisher saw it, as for :meth:`Ledger.claim`.
        """
        return self._drive(self._claim_steps(job_id, seen))

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
        return self._drive(self._delivery_steps(job_id, seen))

    def _drive(self, rule: steps.Steps[_T]) -> _T:
        return steps.drive(rule, ledger=self.ledger, liveness=self.liveness)

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
