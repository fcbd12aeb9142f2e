"""Process liveness backends: Redis keys with a TTL, or lease rows in SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy
from .base import DEFAULT_TTL, Incarnation, Liveness, ProcessInfo
from .memory import MemoryLiveness

if TYPE_CHECKING:
    from ..ledger import Ledger
    from .redis import RedisLiveness
    from .sql import SqlLiveness


def liveness_for(
    ledger: Ledger, redis_url: str | None, ttl: float = DEFAULT_TTL, prefix: str = "jobledger"
) -> Liveness:
    """Redis liveness if a Redis URL is given, else SQL leases where the ledger keeps them.

    (Beside a SQLite ledger file, in ``<file>-leases``; see :func:`.sql.lease_url`.)
    """
    if redis_url:
        from .redis import RedisLiveness  # noqa: PLC0415 (loads redis-py only when asked for)

        return RedisLiveness(redis_url, ttl=ttl, prefix=prefix)
    from .sql import SqlLiveness  # noqa: PLC0415 (loads the lease store only when asked for)

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

#: Backends imported on first use: ``import jobledger`` must not load redis-py.
_HOMES = {"RedisLiveness": ".redis", "SqlLiveness": ".sql"}


# Hidden from type checkers, which see the real imports above: a misspelt name must
# stay an error for users' mypy, not an ``object``.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        return lazy.attribute(__name__, name, _HOMES)

    def __dir__() -> list[str]:
        return lazy.names(__name__, _HOMES)
