"""What the recovery projector and the redeliverer tell whoever watches them.

The loops call a :class:`RecoveryObserver`'s methods as things happen; the base
class does nothing, so the loops never check for one. Metrics and health checks
(:mod:`jobledger.ops`) are observers; this module imports nothing, so the loops
stay importable without ``prometheus_client``.

An observer is called from the loop's own thread, in the middle of its work: a
method must be quick and must not raise (what it raises is logged and dropped by
:class:`Observers`, which is what the loops hold).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger("jobledger.observers")

# How a sweep ended. A paused sweep abandoned nothing because lapses could not be
# believed; a failed one because a backend could not be reached.
OK = "ok"
LIVENESS_RESTARTED = "liveness_restarted"  # paused: the backend restarted, failed over, flushed
MASS_DEATH = "mass_death"  # paused: too many live processes vanished at once
LIVENESS_UNREACHABLE = "liveness_unreachable"  # failed
DATABASE_UNREACHABLE = "database_unreachable"  # failed
ERROR = "error"  # failed with an unexpected exception, which stops the loop
PAUSES = (LIVENESS_UNREACHABLE, LIVENESS_RESTARTED, MASS_DEATH)
OUTCOMES = (OK, LIVENESS_RESTARTED, MASS_DEATH, LIVENESS_UNREACHABLE, DATABASE_UNREACHABLE, ERROR)


class RecoveryObserver:
    """Hooks of the recovery projector and the redeliverer; each does nothing here."""

    def sweep_finished(self, outcome: str, seconds: float) -> None:
        """A sweep ended with ``outcome`` (one of :data:`OUTCOMES`) after ``seconds``."""

    def round_finished(self, next_in: float) -> None:
        """A round of the loop ended; the next begins in ``next_in`` seconds."""

    def holders_seen(self, alive: int, dead: int) -> None:
        """How many processes holding claims were alive and dead at this sweep."""

    def orphan_found(self, queue: str) -> None:
        """A claim about to be ended: its holder is dead (confirmed, past the grace
        period) or, with a heartbeat timeout, silent."""

    def claim_ended(self, queue: str, requeued: bool, latency: float | None) -> None:
        """A dead or hung holder's claim was abandoned (and the job requeued, or not);
        ``latency``: seconds since the holder's record was estimated to expire."""

    def lost_race(self, queue: str) -> None:
        """A claim ended by someone else first (a late ``completed``, another projector)."""

    def redelivered(self, queue: str) -> None:
        """A requeued job was handed back to its job system."""


class Observers(RecoveryObserver):
    """Several observers as one; an observer that raises is logged and skipped."""

    def __init__(self, observers: Iterable[RecoveryObserver] = ()) -> None:
        self.observers = list(observers)

    def _each(self, hook: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:  # an observer must never stop the loop it watches
                log.exception("observer %r failed in %s", observer, hook)

    def sweep_finished(self, outcome: str, seconds: float) -> None:
        self._each("sweep_finished", outcome, seconds)

    def round_finished(self, next_in: float) -> None:
        self._each("round_finished", next_in)

    def holders_seen(self, alive: int, dead: int) -> None:
        self._each("holders_seen", alive, dead)

    def orphan_found(self, queue: str) -> None:
        self._each("orphan_found", queue)

    def claim_ended(self, queue: str, requeued: bool, latency: float | None) -> None:
        self._each("claim_ended", queue, requeued, latency)

    def lost_race(self, queue: str) -> None:
        self._each("lost_race", queue)

    def redelivered(self, queue: str) -> None:
        self._each("redelivered", queue)


def observing(observer: RecoveryObserver | None) -> Observers:
    """``observer`` wrapped so that its failures never reach the loop (none: no-ops)."""
    if isinstance(observer, Observers):
        return observer
    return Observers([] if observer is None else [observer])
