"""Auditing the ledger: verify, point-in-time replay, rebuild and export.

Where each part lives:

* :mod:`.verification`: ``verify``, its :class:`VerifyReport` and :class:`Problem`;
* :mod:`.anchored`: the ledger-wide anchor's check, and its last link (``last_link``);
* :mod:`.folding`: ``replay``, ``state_counts`` and ``rebuild``;
* :mod:`.exports`: ``export`` to JSON lines and ``verify_export``;
* :mod:`.events`: :class:`StoredEvent`, the one event shape every fold reads;
* :mod:`.bulk`, :mod:`.postgres` and :mod:`.sqlite`: reading and writing in bulk, per
  backend (:func:`.session.adapter_for` picks one by ``Backend.bulk_access``);
* :mod:`.shards`: the work split over forked worker processes;
* :mod:`.session`: the snapshot, the plan for workers, progress.

The hash chain and its one link rule are :mod:`jobledger.chain`'s.
"""

from __future__ import annotations

from .anchored import last_link
from .events import StoredEvent
from .exports import export, verify_export
from .folding import rebuild, replay, state_counts
from .session import Progress, default_workers
from .verification import Problem, VerifyReport, verify

__all__ = [
    "Problem",
    "Progress",
    "StoredEvent",
    "VerifyReport",
    "default_workers",
    "export",
    "last_link",
    "rebuild",
    "replay",
    "state_counts",
    "verify",
    "verify_export",
]
