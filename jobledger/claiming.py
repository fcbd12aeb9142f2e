"""How a worker claims a job, written once for :class:`~jobledger.worker.Worker` and
:class:`~jobledger.aio.AsyncWorker`.

A claim may take several calls: the ledger's claim; on ``AlreadyClaimed``, adopting
this worker's own claim whose reply was lost, or testing the holder for death and
taking the job over; for a delivery from a job system, recording a duplicate as
skipped. Each rule is a generator of those calls (:mod:`jobledger.steps`): the
Worker makes them directly, the AsyncWorker awaits them. The claims a worker
holds live here too, behind one lock, since both kinds may serve many threads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from . import bounds, steps
from .errors import (
    AlreadyClaimed,
    AttemptsExhausted,
    ConcurrencyConflict,
    InvalidTransition,
    NotClaiming,
)
from .identity import new_identity, parse
from .lifecycle import TERMINAL_STATES
from .liveness.base import ProcessInfo
from .liveness.trust import LifeWatch
from .policy import RecoveryPolicy
from .records import Claim, JobStatus
from .takeover import end_dead_claim_steps

log = logging.getLogger("jobledger.worker")

#: How often a delivery is looked at again when the job moved on under it.
DELIVERY_LOOKS = 5


@dataclass(frozen=True, slots=True)
class LiveHolder:
    """A claim refused because its holder is not dead, and why we think so."""

    taken: AlreadyClaimed
    why: str


class ClaimRules:
    """The claims a worker holds, and the rules by which it makes them.

    The rules are :mod:`jobledger.steps` generators; a subclass drives them and says
    whether it is :attr:`claiming` and :attr:`presumed_dead`.
    """

    def __init__(
        self,
        identity: str | None,
        ttl: float,
        grace: float | None,
        policy: RecoveryPolicy | None,
        stop_timeout: float,
    ) -> None:
        self.identity = identity or new_identity()
        parsed = parse(self.identity)
        self.host, self.pid = parsed.host, parsed.pid
        self.started_at = datetime.now(timezone.utc)  # shown to operators, never compared
        # A NaN grace would make every claim look old enough to take over.
        self.grace = ttl if grace is None else bounds.seconds(grace, "grace", zero=True)
        self.policy = policy or RecoveryPolicy()
        self.stop_timeout = bounds.seconds(stop_timeout, "stop_timeout", zero=True)
        self._watch = LifeWatch(ttl, f"worker {self.identity}: no takeovers")
        self._held: dict[str, Claim] = {}
        self._claiming: dict[str, int] = {}  # job id -> this worker's claims of it in flight
        self._lock = threading.Lock()
        self._quiet = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.identity}, held={len(self._held)}, quiet={self._quiet})"
        )

    @property
    def stopping(self) -> bool:
        raise NotImplementedError

    @property
    def claiming(self) -> bool:
        """Whether this worker makes new claims: not quiet, stopping or presumed dead."""
        return not (self._quiet or self.presumed_dead or self.stopping)

    @property
    def presumed_dead(self) -> bool:
        raise NotImplementedError

    @property
    def held(self) -> list[Claim]:
        """The claims this worker holds right now."""
        with self._lock:
            return list(self._held.values())

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            if self._held.get(claim.job_id) == claim:
                del self._held[claim.job_id]

    def _info(self) -> ProcessInfo:
        """The liveness record's contents; called from the refresh thread (plain attributes)."""
        return ProcessInfo(
            identity=self.identity,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            quiet=self._quiet or self.stopping,
            busy=len(self._held),
        )

    # -- the rules ---------------------------------------------------------------------------

    def _claim_steps(self, job_id: str, seen: JobStatus | None) -> steps.Steps[Claim]:
        """Claim ``job_id``, taking it over from a dead holder; ``AlreadyClaimed`` if not dead."""
        outcome = yield from self._claim_or_holder(job_id, seen)
        if isinstance(outcome, LiveHolder):
            raise outcome.taken
        return outcome

    def _delivery_steps(self, job_id: str, seen: JobStatus | None) -> steps.Steps[Claim | None]:
        """A claim for a job system's delivery, or ``None`` for a duplicate (recorded as
        skipped): see :meth:`jobledger.worker.Worker.claim_delivery`."""
        for _ in range(DELIVERY_LOOKS):
            outcome: Claim | LiveHolder | None
            try:
                outcome = yield from self._claim_or_holder(job_id, seen)
            except InvalidTransition as refused:
                if refused.state not in TERMINAL_STATES:
                    raise
                outcome = None
            except AlreadyClaimed as taken:  # another process claimed it during our takeover
                outcome = LiveHolder(taken, f"job was just claimed by {taken.holder}")
            if isinstance(outcome, Claim):
                return outcome
            token, why = (outcome.taken.token, outcome.why) if outcome else (None, "")
            skipped = yield steps.ledger(
                "skip_delivery", job_id, self.identity, holder_token=token, why=why
            )
            if skipped is not None:
                log.info("job %r: duplicate delivery skipped by %s", job_id, self.identity)
                return None
            # The job moved on between our look and the skip (released, requeued): look again.
            seen = None
        status = yield steps.ledger("status", job_id)
        raise ConcurrencyConflict(job_id, status.version, "claimed")

    def _claim_or_holder(
        self, job_id: str, seen: JobStatus | None
    ) -> steps.Steps[Claim | LiveHolder]:
        """Our claim on ``job_id``, or its holder who is not dead (and why we think so)."""
        if not self.claiming:
            why = "presumed dead" if self.presumed_dead else "quiet or stopping"
            raise NotClaiming(f"worker {self.identity} is {why}; not claiming {job_id!r}")
        with self._lock:
            self._claiming[job_id] = self._claiming.get(job_id, 0) + 1
        try:
            try:
                # Without seen=, the call as it was before it: a Ledger subclass may not take it.
                ask = {} if seen is None else {"seen": seen}
                claim: Claim = yield steps.ledger("claim", job_id, self.identity, **ask)
            except AlreadyClaimed as taken:
                own = yield from self._own_lost_claim(job_id, taken)
                found = own if own is not None else (yield from self._take_over(job_id, taken))
                if isinstance(found, LiveHolder):
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

    def _own_lost_claim(self, job_id: str, taken: AlreadyClaimed) -> steps.Steps[Claim | None]:
        """Our own claim whose reply was lost (the connection broke after the commit), or
        ``None``. Without this the job would stay claimed by us, unworked, until we exit."""
        if taken.holder != self.identity or taken.token is None:
            return None
        with self._lock:
            # Claimed twice by the caller, or being claimed by another of its threads (whose
            # claim this is): AlreadyClaimed says so. Only a claim nobody here knows is lost.
            if job_id in self._held or self._claiming[job_id] > 1:
                return None
        status: JobStatus = yield steps.ledger("status", job_id)
        if status.claimed_by != self.identity or status.claim_token != taken.token:
            return None
        log.warning("job %r: adopting this worker's own claim %d", job_id, taken.token)
        return Claim(job_id, taken.token, status.attempt, self.identity)

    def _take_over(self, job_id: str, taken: AlreadyClaimed) -> steps.Steps[Claim | LiveHolder]:
        holder = taken.holder
        if holder is None or taken.token is None:
            raise taken
        alive = yield from self._why_not_dead(holder, taken)
        if alive is not None:
            return LiveHolder(taken, alive)
        log.warning(
            "job %r: holder %s is not alive; %s takes it over", job_id, holder, self.identity
        )
        reason = f"holder {holder} is not alive; taken over by {self.identity}"
        ended = yield from end_dead_claim_steps(
            job_id, taken.token, reason, by=self.identity, policy=self.policy
        )
        if ended is not None and not ended.requeued:
            raise AttemptsExhausted(job_id, holder, ended.status.attempt, ended.max_attempts)
        # Ended by us or, first, by someone else: the claim below says how the job stands.
        claim: Claim = yield steps.ledger("claim", job_id, self.identity)
        return claim

    def _why_not_dead(self, holder: str, taken: AlreadyClaimed) -> steps.Steps[str | None]:
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
        if (yield steps.liveness("alive", [holder]))[holder]:
            return f"job is claimed by live process {holder}"
        if not self._watch.trusts((yield steps.liveness("incarnation"))):
            log.info("job %r: liveness cannot be trusted yet; not taking it over", taken.job_id)
            return f"job is claimed by {holder}; liveness cannot be trusted yet"
        if (yield steps.liveness("alive", [holder]))[holder]:
            return f"job is claimed by live process {holder}"
        return None
