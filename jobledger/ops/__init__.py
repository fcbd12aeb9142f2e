"""Operating the recovery projector: Prometheus metrics and health probes.

Needs ``prometheus_client`` (``pip install 'jobledger[metrics]'``). The pieces,
each usable alone in your own process:

- :class:`RecoveryMetrics`: counters and histograms of the projector's and the
  redeliverer's hooks (give it as their ``observer``);
- :class:`LedgerGauges`: per-queue job counts and catch-up lag, refreshed from
  the database in a thread;
- :class:`Health`: liveness and readiness verdicts (an observer too);
- :func:`serve`: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

``jobledger recover --metrics-port PORT`` wires all four.
"""

from __future__ import annotations

from .gauges import LedgerGauges
from .health import Health, Verdict
from .labels import OTHER, BoundedLabels
from .metrics import RecoveryMetrics
from .server import OpsServer, serve

__all__ = [
    "OTHER",
    "BoundedLabels",
    "Health",
    "LedgerGauges",
    "OpsServer",
    "RecoveryMetrics",
    "Verdict",
    "serve",
]
