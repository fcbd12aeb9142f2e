"""Liveness as lease rows in the ledger's own database: the embedded default.

Each live process holds a row whose ``expires_at`` is computed from the
database clock; refreshing moves it forward, lapsing is simply time passing.
No Redis needed, at the price of one small write per process per TTL/3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from .. import bounds
from ..database import engine_for, mask, translated_errors
from ..errors import DatabaseUnavailable, LivenessUnavailable
from ..schema import processes
from ..store import database_clock
from .base import Incarnation, ProcessInfo

if TYPE_CHECKING:
    from ..ledger import Ledger

#: Identities per IN (...) list (SQLite allows 32766 bound variables).
CHUNK = 5000
#: A lease table never forgets leases by itself, so its incarnation never changes.
_INCARNATION = Incarnation(run_id=None, epoch="sql")


class SqlLiveness:
    """Process liveness kept in the ``jobledger_processes`` table."""

    def __init__(self, ledger_or_engine: Ledger | Engine | str, ttl: float = 15.0) -> None:
        self.ttl = bounds.seconds(ttl, "ttl")
        if isinstance(ledger_or_engine, (Engine, str)):
            self.engine = engine_for(ledger_or_engine)
        else:
            self.engine = ledger_or_engine.engine
        self._writer = self.engine.execution_options(jobledger_write=True)
        self._clock = database_clock(self.engine.dialect.name)

    def __repr__(self) -> str:
        return f"SqlLiveness({mask(self.engine.url)}, ttl={self.ttl})"

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Connection]:
        """A transaction (a write one unless ``write=False``); no database: LivenessUnavailable."""
        engine = self._writer if write else self.engine
        try:
            with translated_errors(self.engine), engine.begin() as conn:
                yield conn
        except DatabaseUnavailable as exc:
            raise LivenessUnavailable(str(exc)) from exc

    def _now(self, conn: Connection) -> datetime:
        """The database's current time: leases expire by its clock, never a worker's."""
        now: datetime = conn.execute(select(self._clock)).scalar_one()
        return now

    def _lease(self, info: ProcessInfo, now: datetime) -> dict[str, Any]:
        return {
            "host": info.host,
            "pid": info.pid,
            "started_at": info.started_at,
            "quiet": info.quiet,
            "busy": info.busy,
            "expires_at": now + timedelta(seconds=self.ttl),
        }

    def register(self, info: ProcessInfo) -> None:
        with self._transaction() as conn:
            now = self._now(conn)
            lease = self._lease(info, now)
            moved = conn.execute(
                update(processes).where(processes.c.identity == info.identity).values(lease)
            )
            if moved.rowcount == 0:
                conn.execute(insert(processes).values(identity=info.identity, **lease))

    def refresh(self, info: ProcessInfo) -> bool:
        with self._transaction() as conn:
            now = self._now(conn)
            moved = conn.execute(
                update(processes)
                .where(processes.c.identity == info.identity, processes.c.expires_at > now)
                .values(self._lease(info, now))
            )
            return moved.rowcount == 1

    def unregister(self, identity: str) -> None:
        with self._transaction() as conn:
            conn.execute(delete(processes).where(processes.c.identity == identity))

    def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        ordered = list(identities)
        left: dict[str, float | None] = dict.fromkeys(ordered)
        with self._transaction(write=False) as conn:
            now = self._now(conn)
            for start in range(0, len(ordered), CHUNK):
                chunk = ordered[start : start + CHUNK]
                rows = conn.execute(
                    select(processes.c.identity, processes.c.expires_at).where(
                        processes.c.identity.in_(chunk), processes.c.expires_at > now
                    )
                )
                left.update({r.identity: (r.expires_at - now).total_seconds() for r in rows})
        return left

    def alive(self, identities: Collection[str]) -> dict[str, bool]:
        return {identity: left is not None for identity, left in self.remaining(identities).items()}

    def processes(self) -> list[ProcessInfo]:
        with self._transaction(write=False) as conn:
            now = self._now(conn)
            rows = conn.execute(
                select(processes).where(processes.c.expires_at > now).order_by(processes.c.identity)
            ).all()
        return [
            ProcessInfo(r.identity, r.host, r.pid, r.started_at, bool(r.quiet), r.busy)
            for r in rows
        ]

    def known(self) -> set[str]:
        with self._transaction(write=False) as conn:
            return set(conn.execute(select(processes.c.identity)).scalars())

    def forget(self, identities: Collection[str]) -> None:
        ordered = list(identities)
        with self._transaction() as conn:
            now = self._now(conn)
            for start in range(0, len(ordered), CHUNK):
                conn.execute(
                    delete(processes).where(
                        processes.c.identity.in_(ordered[start : start + CHUNK]),
                        processes.c.expires_at <= now,  # never forget a live process
                    )
                )

    def incarnation(self) -> Incarnation:
        return _INCARNATION

    def close(self) -> None:
        """Nothing to release: the engine belongs to the ledger (or its creator)."""
