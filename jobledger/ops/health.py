"""Liveness and readiness of the recovery projector, as Kubernetes probes ask them.

:class:`Health` is a :class:`~jobledger.observers.RecoveryObserver` that
remembers when the loop last finished a round and how the last sweep ended:

- live (``/healthz``): the loop finished a round when it said it would, give or
  take ``stall_after`` seconds. A sweep stuck in a call that never returns makes
  it fail; so does a loop that stopped. A failing database or Redis does not: the
  loop is running, backing off, and restarting the process would not help.
- ready (``/readyz``): live, and the last sweep could act, which means it reached
  the database and the liveness backend and was not paused (a liveness restart
  or a mass death, one TTL at a time). After an outage it turns ready at the
  first good sweep, which may come up to the projector's backoff (30 s) later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import bounds, observers
from ..observers import RecoveryObserver

#: Seconds a round may run late before the loop counts as stalled, by default.
DEFAULT_STALL_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """A probe's answer and a short reason (names only: never an error's text)."""

    ok: bool
    reason: str


class Health(RecoveryObserver):
    """Whether the projector's loop runs (:meth:`live`) and can act (:meth:`ready`)."""

    def __init__(
        self,
        stall_after: float = DEFAULT_STALL_AFTER,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after = bounds.seconds(stall_after, "stall_after")
        self._clock = clock
        self._lock = threading.Lock()
        self._due = clock() + stall_after  # the first round must end by then
        self._outcome: str | None = None  # of the last sweep

    def round_finished(self, next_in: float) -> None:
        with self._lock:
            self._due = self._clock() + next_in + self.stall_after

    def sweep_finished(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._outcome = outcome
            # Loops of your own that call run_once() (no rounds) stay live while they sweep.
            self._due = max(self._due, self._clock() + self.stall_after)

    def live(self) -> Verdict:
        """Ok while the loop keeps to its schedule."""
        with self._lock:
            late = self._clock() - self._due
        if late > 0:
            return Verdict(False, f"stalled: no round finished for {late:.0f}s past its time")
        return Verdict(True, "running")

    def ready(self) -> Verdict:
        """Ok while live and the last sweep reached both backends and was not paused."""
        alive = self.live()
        if not alive.ok:
            return alive
        with self._lock:
            outcome = self._outcome
        if outcome is None:
            return Verdict(False, "starting: no sweep yet")
        if outcome != observers.OK:
            return Verdict(False, f"last sweep: {outcome}")
        return Verdict(True, "ready")
