"""Prometheus metrics of the recovery projector and the redeliverer, from their hooks.

:class:`RecoveryMetrics` is a :class:`~jobledger.observers.RecoveryObserver`:
give it to ``RecoveryProjector(observer=...)`` and ``Redeliverer(observer=...)``
and it counts what they do in the registry it was given. Queue labels are
bounded (:mod:`jobledger.ops.labels`); nothing else the ledger stores becomes a
label.
"""

from __future__ import annotations

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .. import observers
from ..observers import RecoveryObserver
from .labels import DEFAULT_MAX_QUEUES, BoundedLabels

#: Sweeps take milliseconds with a few holders and seconds with many thousands.
SWEEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Detection latency: from a holder's estimated expiry to its claim's abandon.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_PAUSED = {
    observers.LIVENESS_RESTARTED: "paused",
    observers.MASS_DEATH: "paused",
    observers.LIVENESS_UNREACHABLE: "failed",
    observers.DATABASE_UNREACHABLE: "failed",
    observers.ERROR: "failed",
}


class RecoveryMetrics(RecoveryObserver):
    """Counts sweeps, pauses, orphans, abandons, requeues and redeliveries in ``registry``.

    ``registry`` defaults to ``prometheus_client``'s global one (what its
    ``start_http_server`` serves); ``queues`` bounds the queue labels (share one
    :class:`BoundedLabels` with :class:`~jobledger.ops.gauges.LedgerGauges`).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        queues: BoundedLabels | None = None,
    ) -> None:
        self.queues = queues if queues is not None else BoundedLabels(DEFAULT_MAX_QUEUES)
        self.sweeps = Counter(
            "jobledger_recovery_sweeps",
            "Recovery sweeps, by outcome: ok, paused (lapses not believed), failed.",
            ["outcome"],
            registry=registry,
        )
        self.sweep_seconds = Histogram(
            "jobledger_recovery_sweep_duration_seconds",
            "Time one recovery sweep took.",
            buckets=SWEEP_BUCKETS,
            registry=registry,
        )
        self.pauses = Counter(
            "jobledger_recovery_paused_sweeps",
            "Sweeps that abandoned nothing because liveness could not be trusted, by reason: "
            "liveness_unreachable, liveness_restarted (restart, failover, flush), mass_death.",
            ["reason"],
            registry=registry,
        )
        self.paused = Gauge(
            "jobledger_recovery_paused",
            "1 while the last sweep was paused for this reason, else 0.",
            ["reason"],
            registry=registry,
        )
        self.last_ok = Gauge(
            "jobledger_recovery_last_ok_sweep_timestamp_seconds",
            "Unix time of the last sweep that could act on lapsed holders.",
            registry=registry,
        )
        self.holders = Gauge(
            "jobledger_recovery_holders",
            "Processes holding claims at the last sweep that looked, by state: alive, dead.",
            ["state"],
            registry=registry,
        )
        self.orphans = Counter(
            "jobledger_recovery_orphans_found",
            "Claims of dead (or, with a heartbeat timeout, silent) holders the projector "
            "set out to end.",
            ["queue"],
            registry=registry,
        )
        self.abandoned = Counter(
            "jobledger_recovery_abandoned",
            "Claims the projector abandoned.",
            ["queue"],
            registry=registry,
        )
        self.requeued = Counter(
            "jobledger_recovery_requeued",
            "Abandoned jobs the policy sent back to their queue.",
            ["queue"],
            registry=registry,
        )
        self.left_abandoned = Counter(
            "jobledger_recovery_left_abandoned",
            "Abandoned jobs that reached their attempt cap and wait for an operator.",
            ["queue"],
            registry=registry,
        )
        self.lost_races = Counter(
            "jobledger_recovery_lost_races",
            "Claims that ended otherwise before the projector's abandon (completed late, "
            "ended by another projector).",
            ["queue"],
            registry=registry,
        )
        self.latency = Histogram(
            "jobledger_recovery_detection_latency_seconds",
            "From a dead holder's estimated expiry to the abandon of its claim.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.redeliveries = Counter(
            "jobledger_redelivered",
            "Requeued jobs handed back to their job system (a repeat after a crash counts).",
            ["queue"],
            registry=registry,
        )
        # Series that exist before anything happens, so rate() and alerts see zeros.
        for outcome in ("ok", "paused", "failed"):
            self.sweeps.labels(outcome)
        for reason in observers.PAUSES:
            self.pauses.labels(reason)
            self.paused.labels(reason).set(0)
        for state in ("alive", "dead"):
            self.holders.labels(state).set(0)

    def sweep_finished(self, outcome: str, seconds: float) -> None:
        self.sweeps.labels(_PAUSED.get(outcome, "ok")).inc()
        self.sweep_seconds.observe(seconds)
        for reason in observers.PAUSES:
            self.paused.labels(reason).set(1 if outcome == reason else 0)
        if outcome in observers.PAUSES:
            self.pauses.labels(outcome).inc()
        if outcome == observers.OK:
            self.last_ok.set(time.time())

    def holders_seen(self, alive: int, dead: int) -> None:
        self.holders.labels("alive").set(alive)
        self.holders.labels("dead").set(dead)

    def orphan_found(self, queue: str) -> None:
        self.orphans.labels(self.queues(queue)).inc()

    def claim_ended(self, queue: str, requeued: bool, latency: float | None) -> None:
        label = self.queues(queue)
        self.abandoned.labels(label).inc()
        (self.requeued if requeued else self.left_abandoned).labels(label).inc()
        if latency is not None:
            self.latency.observe(max(latency, 0.0))

    def lost_race(self, queue: str) -> None:
        self.lost_races.labels(self.queues(queue)).inc()

    def redelivered(self, queue: str) -> None:
        self.redeliveries.labels(self.queues(queue)).inc()
