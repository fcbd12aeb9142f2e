"""jobledger: an honest, replayable record of every background job's life."""

from __future__ import annotations

from .ledger import Ledger
from .liveness import RedisLiveness, SqlLiveness
from .policy import RecoveryPolicy
from .records import Claim, Event, JobStatus
from .recovery import RecoveryProjector
from .worker import Worker

__all__ = [
    "Claim",
    "Event",
    "JobStatus",
    "Ledger",
    "RecoveryPolicy",
    "RecoveryProjector",
    "RedisLiveness",
    "SqlLiveness",
    "Worker",
]
__version__ = "0.1.0"
