"""jobledger: an honest, replayable record of every background job's life."""

from __future__ import annotations

from .ledger import Ledger
from .records import Claim, Event, JobStatus

__all__ = ["Claim", "Event", "JobStatus", "Ledger"]
__version__ = "0.1.0"
