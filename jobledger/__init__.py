"""jobledger: an honest, replayable record of every background job's life."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import lazy
from .policy import RecoveryPolicy
from .records import Claim, Event, JobStatus

if TYPE_CHECKING:
    from .ledger import Ledger
    from .liveness import RedisLiveness, SqlLiveness
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

#: Exports whose modules load SQLAlchemy or Redis, imported on first use (see ``lazy``).
_HOMES = {
    "Ledger": ".ledger",
    "RecoveryProjector": ".recovery",
    "RedisLiveness": ".liveness",
    "SqlLiveness": ".liveness",
    "Worker": ".worker",
}


# Hidden from type checkers, which see the real imports above: a misspelt name must
# stay an error for users' mypy, not an ``object``.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        return lazy.attribute(__name__, name, _HOMES)

    def __dir__() -> list[str]:
        return lazy.names(__name__, _HOMES)
