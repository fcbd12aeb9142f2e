"""Process liveness backends: Redis keys with a TTL, or lease rows in SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Incarnation, Liveness, ProcessInfo
from .memory import MemoryLiveness
from .redis import RedisLiveness
from .sql import SqlLiveness

if TYPE_CHECKING:
    from ..ledger import Ledger

#: Seconds a process stays alive without refreshing its record.
DEFAULT_TTL = 15.0


def liveness_for(
    ledger: Ledger, redis_url: str | None, ttl: float = DEFAULT_TTL, prefix: str = "jobledger"
) -> Liveness:
    """Redis liveness if a Redis URL is given, else SQL leases where the ledger keeps them.

    (Beside a SQLite ledger file, in ``<file>-leases``; see :func:`.sql.lease_url`.)
    """
    if redis_url:
        return RedisLiveness(redis_url, ttl=ttl, prefix=prefix)
    return SqlLiveness(ledger, ttl=ttl)


__all__ = [
    "DEFAULT_TTL",
    "Incarnation",
    "Liveness",
    "MemoryLiveness",
    "ProcessInfo",
    "RedisLiveness",
    "SqlLiveness",
    "liveness_for",
]
