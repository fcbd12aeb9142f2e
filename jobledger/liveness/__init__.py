"""Process liveness backends: Redis keys with a TTL, or lease rows in SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import DEFAULT_TTL, Incarnation, Liveness, ProcessInfo
from .redis import RedisLiveness
from .sql import SqlLiveness

if TYPE_CHECKING:
    from ..ledger import Ledger


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
    "ProcessInfo",
    "RedisLiveness",
    "SqlLiveness",
    "liveness_for",
]
