"""jobledger for asyncio: the Ledger's commands and the Worker, awaited.

``AsyncLedger`` talks to PostgreSQL through psycopg's async connection and to
SQLite through aiosqlite, with the decisions, statements and tables of the sync
:class:`~jobledger.ledger.Ledger`. ``AsyncWorker`` keeps its process alive from a
thread, so a task body that blocks the event loop cannot make it look dead.
Install with ``pip install 'jobledger[aio]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy

if TYPE_CHECKING:
    from .ledger import AsyncLedger
    from .liveness import AsyncLiveness, AsyncRedisLiveness, AsyncSqlLiveness
    from .worker import AsyncWorker

__all__ = ["AsyncLedger", "AsyncLiveness", "AsyncRedisLiveness", "AsyncSqlLiveness", "AsyncWorker"]

_HOMES = {
    "AsyncLedger": ".ledger",
    "AsyncLiveness": ".liveness",
    "AsyncRedisLiveness": ".liveness",
    "AsyncSqlLiveness": ".liveness",
    "AsyncWorker": ".worker",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        return lazy.attribute(__name__, name, _HOMES)

    def __dir__() -> list[str]:
        return lazy.names(__name__, _HOMES)
