"""The recovery projector: finds claims whose holder died and hands the jobs back.

Detection is a polling sweep. Each sweep reads the claimed jobs grouped by
holder (one query), asks the liveness backend how long every holder and known
process has left (one pipelined round trip), and for holders that are gone
looks again, checks the grace period, and appends ``abandoned`` with the claim
token it saw. The ledger's version guard makes that append lose cleanly to a
late ``completed`` or to another projector, so several projectors can run.

Keyspace notifications are not used: Redis expires keys lazily and sends
``expired`` only when its expiry cycle gets round to a key, measured up to
~50 s late with many keys carrying TTLs. ``PTTL`` on the key, which the
sweep does, expires it on the spot.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from . import bounds, observers
from .errors import DatabaseUnavailable, LivenessUnavailable
from .identity import new_identity
from .ledger import Ledger
from .liveness.base import Liveness, chunked
from .liveness.trust import LifeWatch
from .observers import RecoveryObserver
from .policy import RecoveryPolicy
from .runner import Runner
from .storage.reads import HeldClaim
from .takeover import Ended, end_dead_claim

log = logging.getLogger("jobledger.recovery")

#: Longest wait between sweeps while liveness or the database is unavailable, in seconds.
MAX_BACKOFF = 30.0
#: Dead claims ended at once by default (``abandon_concurrency``), where the database takes
#: concurrent writers; SQLite takes one writer at a time, so there it is 1.
DEFAULT_ABANDON_CONCURRENCY = 4
#: Dead claims handed to the threads ahead of the one reported next.
_ABANDON_WINDOW = 1000
#: What a thread returns for a claim it did not start, after another failed.
_NOT_STARTED = object()
_NOT_GIVEN: Any = object()  # run_forever's deprecated handle_signals was not passed


@dataclass(frozen=True)
class Recovery:
    """One decision of the projector about one job."""

    job_id: str
    holder: str
    token: int
    reason: str
    attempt: int
    requeued: bool
    latency: float | None  # seconds from the holder's estimated expiry to the abandon


@dataclass
class Counters:
    """What the projector has done since it started."""

    sweeps: int = 0
    abandoned: int = 0
    requeued: int = 0
    left_abandoned: int = 0
    paused_sweeps: int = 0
    unavailable_sweeps: int = 0
    lost_races: int = 0
    last_sweep_seconds: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


@dataclass(frozen=True)
class _Orphan:
    job_id: str
    queue: str
    holder: str
    token: int
    attempt: int


#: How ending a dead claim went: the orphan, the reason, the end (``None``: the claim had
#: ended already) and the error that stopped it, if one did.
_Ending = tuple[_Orphan, str, "Ended | None", "BaseException | None"]


class RecoveryProjector(Runner):
    """Appends ``abandoned`` for claims whose holder's liveness record lapsed.

    A :class:`~jobledger.runner.Runner`: by default (``handle_signals=None``)
    SIGTERM and SIGINT stop :meth:`run_forever` when it runs in the main thread.

    ``abandon_concurrency`` claims are ended at once, each in its own transaction on its
    own connection (threads), so that a mass death is recovered at the database's pace,
    not one round trip after another. Each is guarded as when alone, so a claim that
    ended meanwhile, or that another projector ended first, is still left alone. The
    decisions are counted, logged and returned in the order the claims were found.
    Default: :data:`DEFAULT_ABANDON_CONCURRENCY`, 1 on SQLite.
    """

    def __init__(
        self,
        ledger: Ledger,
        liveness: Liveness,
        policy: RecoveryPolicy | None = None,
        *,
        interval: float = 1.0,
        grace: float | None = None,
        mass_death_share: float = 0.5,
        mass_death_minimum: int = 3,
        identity: str | None = None,
        handle_signals: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer: RecoveryObserver | None = None,
        abandon_concurrency: int | None = None,
    ) -> None:
        super().__init__(handle_signals=handle_signals)
        bounds.seconds(interval, "interval")
        if abandon_concurrency is None:
            sqlite = ledger.engine.dialect.name == "sqlite"
            abandon_concurrency = 1 if sqlite else DEFAULT_ABANDON_CONCURRENCY
        bounds.count(abandon_concurrency, "abandon_concurrency")
        if grace is not None:
            bounds.seconds(grace, "grace", zero=True)
        if not 0 < mass_death_share <= 1 or mass_death_minimum < 1:
            raise ValueError("mass_death_share must be in (0, 1] and mass_death_minimum >= 1")
        self.ledger = ledger
        self.liveness = liveness
        self.policy = policy or RecoveryPolicy()
        self.interval = interval
        self.grace = liveness.ttl if grace is None else grace
        self.mass_death_share = mass_death_share
        self.mass_death_minimum = mass_death_minimum
        self.abandon_concurrency = abandon_concurrency
        self.identity = identity or new_identity()
        self.counters = Counters()
        #: Told of every sweep, pause and decision (metrics, health: :mod:`jobledger.ops`).
        self.observer = observers.observing(observer)
        self._outcome = observers.OK  # how the sweep under way ends, unless it raises
        # Pauses, expiry estimates and latencies run on this clock (tests drive their own);
        # claim ages are read on the database clock, as every worker's are, and the time a
        # sweep took is measured on the real one.
        self._monotonic = clock
        self._watch = LifeWatch(liveness.ttl, clock=clock)
        self._previously_alive: set[str] = set()
        self._expiry: dict[str, float] = {}  # identity -> estimated expiry, by self._monotonic
        self._delay = interval  # until the next sweep; grows while sweeps fail

    def __str__(self) -> str:
        return f"recovery projector {self.identity}"

    # -- running -------------------------------------------------------------------------

    def run_once(self) -> list[Recovery]:
        """One sweep; the jobs it abandoned. ``LivenessUnavailable``: nothing was abandoned."""
        started = time.monotonic()
        self._outcome = observers.OK
        try:
            return self._sweep()
        except LivenessUnavailable:
            self.counters.unavailable_sweeps += 1
            self._outcome = observers.LIVENESS_UNREACHABLE
            raise
        except DatabaseUnavailable:
            self._outcome = observers.DATABASE_UNREACHABLE
            raise
        except BaseException:
            self._outcome = observers.ERROR
            raise
        finally:
            self.counters.sweeps += 1
            self.counters.last_sweep_seconds = time.monotonic() - started
            self.observer.sweep_finished(self._outcome, self.counters.last_sweep_seconds)

    def run_forever(self, handle_signals: bool = _NOT_GIVEN) -> None:
        """Sweep every ``interval`` until :meth:`stop` (or a signal); back off on outages.

        ``handle_signals`` here is deprecated: give it to the constructor.
        """
        if handle_signals is _NOT_GIVEN:
            super().run_forever()
            return
        warnings.warn(
            "RecoveryProjector.run_forever(handle_signals=...) is deprecated: "
            "pass handle_signals to RecoveryProjector()",
            DeprecationWarning,
            stacklevel=2,
        )
        self._run_until_stopped(None if handle_signals else False)  # True was "if main thread"

    def _round(self) -> float:
        try:
            self.run_once()
            self._delay = self.interval
        except (LivenessUnavailable, DatabaseUnavailable) as exc:
            self._delay = min(max(self._delay * 2, self.interval), MAX_BACKOFF)
            log.error("sweep failed, abandoning nothing; retrying in %.1fs: %s", self._delay, exc)
        self.observer.round_finished(self._delay)
        return self._delay

    def _starting(self) -> None:
        self._delay = self.interval
        log.info(
            "recovery projector %s started: ttl %.1fs, grace %.1fs, every %.1fs",
            self.identity,
            self.liveness.ttl,
            self.grace,
            self.interval,
        )

    def _stopped(self) -> None:
        log.info("recovery projector %s stopped: %s", self.identity, self.summary())

    def summary(self) -> dict[str, Any]:
        """The counters, with detection latency percentiles (seconds past expiry)."""
        c = self.counters
        ordered = sorted(c.latencies)

        def pct(p: float) -> float | None:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else None

        return {
            "sweeps": c.sweeps,
            "abandoned": c.abandoned,
            "requeued": c.requeued,
            "left_abandoned": c.left_abandoned,
            "paused_sweeps": c.paused_sweeps,
            "unavailable_sweeps": c.unavailable_sweeps,
            "lost_races": c.lost_races,
            "last_sweep_seconds": c.last_sweep_seconds,
            "latency_p50": pct(0.5),
            "latency_p99": pct(0.99),
            "latency_max": ordered[-1] if ordered else None,
        }

    # -- one sweep -----------------------------------------------------------------------

    def _sweep(self) -> list[Recovery]:
        if not self._watch.trusts(self.liveness.incarnation()):
            self._previously_alive = set()
            self._paused_sweep()
            return []
        holders = self._holders()
        known = self.liveness.known()
        left = self.liveness.remaining(known | holders)
        alive = {identity for identity, seconds in left.items() if seconds is not None}
        self._estimate_expiries(left, holders)
        if self._mass_death(alive, known):
            self._paused_sweep()
            return []
        self.observer.holders_seen(len(holders & alive), len(holders - alive))
        recoveries = self._recover_dead(holders - alive)
        recoveries += self._recover_hung(holders & alive)
        self._forget_departed(known - alive - holders)
        return recoveries

    def _estimate_expiries(self, left: dict[str, float | None], holders: set[str]) -> None:
        """Keep an expiry estimate for the live and for holders that lapsed, no one else, so
        memory follows the processes alive now, not every process ever seen."""
        now = self._monotonic()
        expiry = {identity: now + s for identity, s in left.items() if s is not None}
        for identity in holders - expiry.keys():
            if identity in self._expiry:
                expiry[identity] = self._expiry[identity]  # the latency of its abandon
        self._expiry = expiry

    def _mass_death(self, alive: set[str], known: set[str]) -> bool:
        # A process that unregistered (left `known`) departed gracefully; it is not a death.
        vanished = (self._previously_alive & known) - alive
        before = len(self._previously_alive)
        self._previously_alive = alive
        if (
            len(vanished) >= self.mass_death_minimum
            and len(vanished) > self.mass_death_share * before
        ):
            self._pause(
                f"{len(vanished)} of {before} live processes vanished in one sweep, "
                f"more than {self.mass_death_share:.0%}"
            )
            return True
        return False

    def _pause(self, why: str) -> None:
        self._watch.doubt(why, cause=observers.MASS_DEATH)
        self._previously_alive = set()

    def _paused_sweep(self) -> None:
        self.counters.paused_sweeps += 1
        self._outcome = self._watch.cause

    # -- reading the ledger --------------------------------------------------------------

    def _holders(self) -> set[str]:
        return self.ledger.claim_holders()

    def _claimed_rows(self, holders: Collection[str]) -> list[HeldClaim]:
        """The claimed jobs of ``holders``, each with the database clock as ``now``."""
        rows: list[HeldClaim] = []
        for chunk in chunked(sorted(holders)):  # bounded IN lists
            rows += self._claimed_by(chunk)
        return rows

    def _claimed_by(self, holders: list[str]) -> list[HeldClaim]:
        return self.ledger.claims_held_by(holders)

    def _orphans(self, holders: Collection[str]) -> list[_Orphan]:
        grace = timedelta(seconds=self.grace)
        rows = self._claimed_rows(holders)
        return [_orphan(row) for row in rows if row.now - row.claimed_at >= grace]

    # -- deciding ------------------------------------------------------------------------

    def _recover_dead(self, dead: set[str]) -> list[Recovery]:
        if not dead:
            return []
        orphans = self._orphans(dead)
        # Second look, just before acting: a holder that re-registered meanwhile keeps its jobs.
        second = self.liveness.alive({o.holder for o in orphans})
        if orphans and not self._watch.trusts(self.liveness.incarnation()):
            self._outcome = self._watch.cause
            return []  # the backend lost its records during this sweep: they prove nothing
        doomed = []
        for orphan in orphans:
            if second[orphan.holder]:
                log.info("holder %s is back; leaving %r alone", orphan.holder, orphan.job_id)
            else:
                doomed.append((orphan, f"holder {orphan.holder} is not alive"))
        return self._abandon_all(doomed)

    def _recover_hung(self, live_holders: set[str]) -> list[Recovery]:
        policy = self.policy
        if policy.heartbeat_timeout is None and not policy.heartbeat_timeout_by_queue:
            return []
        hung = []
        for row in self._claimed_rows(live_holders):
            timeout = policy.timeout_for(row.queue)
            if timeout is not None and row.now - row.seen >= timedelta(seconds=timeout):
                hung.append((_orphan(row), "heartbeat-timeout"))
        return self._abandon_all(hung, hung=True)

    # -- acting --------------------------------------------------------------------------

    def _abandon_all(self, doomed: list[tuple[_Orphan, str]], hung: bool = False) -> list[Recovery]:
        """End each ``(orphan, reason)``'s claim; the recoveries, in ``doomed``'s order.

        After a failure no more claims are started; those already under way are still
        counted and logged, then the first failure is raised.
        """
        recoveries: list[Recovery] = []
        failure: BaseException | None = None
        for orphan, reason, ended, error in self._ending(doomed):
            self.observer.orphan_found(orphan.queue)
            if error is not None:
                failure = failure or error
                continue
            recovery = self._account(orphan, reason, ended, hung)
            if recovery is not None:
                recoveries.append(recovery)
        if failure is not None:
            raise failure
        return recoveries

    def _ending(self, doomed: list[tuple[_Orphan, str]]) -> Iterator[_Ending]:
        """Each ``(orphan, reason)`` with its claim's end or the error that stopped it, in
        order; none is started after one failed."""
        workers = min(self.abandon_concurrency, len(doomed))
        if workers > 1:
            yield from self._ending_at_once(doomed, workers)
            return
        for orphan, reason in doomed:
            error: BaseException | None
            try:
                ended, error = self._end(orphan, reason), None
            except Exception as exc:  # the caller raises it
                ended, error = None, exc
            yield orphan, reason, ended, error
            if error is not None:
                return

    def _ending_at_once(self, doomed: list[tuple[_Orphan, str]], workers: int) -> Iterator[_Ending]:
        """:meth:`_ending`, ``workers`` claims at a time (threads).

        Up to :data:`_ABANDON_WINDOW` claims wait for a thread, so that one slow claim (a
        lock wait, a slow trigger) holds up one thread, not the others. Once one failed, no
        thread starts another; those that had started are still reported.
        """
        stop = threading.Event()

        def end(orphan: _Orphan, reason: str) -> object:  # Ended, None or _NOT_STARTED
            if stop.is_set():
                return _NOT_STARTED
            try:
                return self._end(orphan, reason)
            except Exception:
                stop.set()
                raise

        waiting = iter(doomed)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="jobledger-abandon")
        pending: deque[tuple[tuple[_Orphan, str], Future[Any]]] = deque()
        try:
            while True:
                while len(pending) < _ABANDON_WINDOW and not stop.is_set():
                    pair = next(waiting, None)
                    if pair is None:
                        break
                    pending.append((pair, pool.submit(end, *pair)))
                if not pending:
                    return
                (orphan, reason), future = pending.popleft()
                error = future.exception()  # waits for it
                if error is not None:
                    yield orphan, reason, None, error
                elif (ended := future.result()) is not _NOT_STARTED:
                    yield orphan, reason, ended, None
        finally:
            stop.set()  # the claims not started yet are not started (an early close)
            pool.shutdown(wait=True, cancel_futures=True)

    def _end(self, orphan: _Orphan, reason: str) -> Ended | None:
        return end_dead_claim(
            self.ledger, orphan.job_id, orphan.token, reason, by=self.identity, policy=self.policy
        )

    def _account(
        self, orphan: _Orphan, reason: str, ended: Ended | None, hung: bool
    ) -> Recovery | None:
        """Count, observe and log how ``orphan``'s claim ended; its recovery, if it did."""
        if ended is None:
            self.counters.lost_races += 1
            self.observer.lost_race(orphan.queue)
            return None
        expiry = None if hung else self._expiry.get(orphan.holder)
        latency = self._monotonic() - expiry if expiry is not None else None
        if latency is not None:
            self.counters.latencies.append(latency)
        self.counters.abandoned += 1
        requeued = ended.requeued
        self.observer.claim_ended(orphan.queue, requeued, latency)
        if requeued:
            self.counters.requeued += 1
        else:
            self.counters.left_abandoned += 1
        log.warning(
            "job %r abandoned (%s; attempt %d, token %d)%s",
            orphan.job_id,
            reason,
            orphan.attempt,
            orphan.token,
            ", requeued" if requeued else ", left abandoned",
        )
        return Recovery(
            orphan.job_id, orphan.holder, orphan.token, reason, orphan.attempt, requeued, latency
        )

    def _forget_departed(self, lapsed: set[str]) -> None:
        """Lapsed identities holding nothing are dropped from the registry."""
        if lapsed:
            self.liveness.forget(lapsed)
            log.info("forgot %d lapsed processes holding no jobs", len(lapsed))


def _orphan(row: HeldClaim) -> _Orphan:
    return _Orphan(row.job_id, row.queue, row.claimed_by, row.claim_token, row.attempt)
