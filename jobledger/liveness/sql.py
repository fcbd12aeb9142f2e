"""Liveness as lease rows in SQL: the embedded default.

Each live process holds a row whose ``expires_at`` is computed from the
database clock; refreshing moves it forward, lapsing is simply time passing.
No Redis needed, at the price of one small write per process per TTL/3.

A lease store must never share a lock that the ledger's writers hold, or a
long write (a rebuild, a bulk enqueue, another process's transaction, or just
many busy workers) stops every refresh while the projector, which can still
read, watches the leases lapse. SQLite has one write lock per file, so a
SQLite ledger keeps its leases in a file of their own beside it,
``<ledger>-leases`` (see :func:`lease_url`), where each write is one short
transaction. PostgreSQL locks rows, so leases stay in the ledger's database.

On SQLite, as a second line of defence, a lapse is trusted only while the
lease store visibly takes writes: ``remaining()`` takes the store's write lock
for its read, and any write here that had to wait ``BLOCKED_SHARE`` of the TTL
or failed means refreshes may have waited as long, so for one TTL after it
``remaining()`` and ``alive()`` raise ``LivenessUnavailable`` (the projector
then abandons nothing, as when Redis is unreachable).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Row, Select, delete, func, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.schema import CreateIndex, CreateTable

from .. import bounds
from ..database import creating, engine_for, mask, refuse_missing_file, translated_errors
from ..errors import DatabaseUnavailable, LivenessUnavailable
from ..schema import processes
from ..storage import backend_for, backend_named
from .base import DEFAULT_TTL, Incarnation, LivenessBackend, ProcessInfo, chunked

if TYPE_CHECKING:
    from ..ledger import Ledger

log = logging.getLogger("jobledger.liveness")

#: On SQLite, a lease write that took this share of the TTL means the store was blocked.
#: A lease lapses only if refreshes wait 2/3 of the TTL, and the projector probes every
#: sweep, so this catches every such block while sweeps come more often than 5/12 TTL.
BLOCKED_SHARE = 0.25
#: A lease table never forgets leases by itself, so its incarnation never changes.
_INCARNATION = Incarnation(run_id=None, epoch="sql")


def lease_url(ledger_url: URL) -> URL | None:
    """Where a ledger's leases live, if not in the ledger's own database.

    A SQLite file ``path`` keeps them in ``path-leases`` (named like SQLite's own
    ``-wal`` and ``-shm`` companions); an in-memory SQLite database, private to
    one process, and every other database keep them in the ledger's database.
    """
    return backend_named(ledger_url.get_backend_name()).lease_url(ledger_url)


class SqlLiveness(LivenessBackend):
    """Process liveness kept in a ``jobledger_processes`` lease table.

    Given a Ledger (or its engine or URL), the leases live where
    :func:`lease_url` says. ``leases`` puts them elsewhere (a URL or an Engine);
    every process of one ledger must then be given the same place, or each
    sees the others as dead. A lease table outside the ledger's database is
    created on first use.
    """

    def __init__(
        self,
        ledger_or_engine: Ledger | Engine | str,
        ttl: float = DEFAULT_TTL,
        *,
        leases: Engine | str | None = None,
    ) -> None:
        self.ttl = bounds.seconds(ttl, "ttl")
        self._made: list[Engine] = []  # engines made here from URLs: close() disposes them
        if isinstance(ledger_or_engine, (Engine, str)):
            ledger_engine = self._engine_for(ledger_or_engine)
        else:
            ledger_engine = ledger_or_engine.engine
        place = lease_url(ledger_engine.url) if leases is None else leases
        self.engine = ledger_engine if place is None else self._engine_for(place)
        made_for_leases = place is not None and not isinstance(place, Engine)
        backend = backend_for(self.engine)
        if made_for_leases:
            backend.configure_lease_store(self.engine)
        # Migrations create the table in the ledger's database; elsewhere it is ours to make.
        self._table_ready = self.engine is ledger_engine
        self._ledger_engine = ledger_engine
        self._writer = self.engine.execution_options(jobledger_write=True)
        self._clock = backend.clock()
        self._one_write_lock = backend.one_write_lock
        self._blocked_until = 0.0  # time.monotonic() until which lapses are not trusted
        self._blocked_for = 0.0

    def _engine_for(self, where: Engine | str | URL) -> Engine:
        """``where``'s Engine; one made here (from a URL) is this backend's to dispose."""
        engine = engine_for(where)
        if engine is not where:
            self._made.append(engine)
        return engine

    def __repr__(self) -> str:
        return f"SqlLiveness({mask(self.engine.url)}, ttl={self.ttl})"

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Connection]:
        """A transaction (a write one unless ``write=False``); no database: LivenessUnavailable."""
        self._create_table()
        engine = self._writer if write else self.engine
        started = time.monotonic()
        try:
            with translated_errors(self.engine), engine.begin() as conn:
                yield conn
        except DatabaseUnavailable as exc:
            if write:
                self._note_blocked(time.monotonic() - started)
            raise LivenessUnavailable(str(exc)) from exc
        took = time.monotonic() - started
        if write and took >= BLOCKED_SHARE * self.ttl:
            self._note_blocked(took)

    def _create_table(self) -> None:
        if self._table_ready:
            return
        # The lease store is the ledger's companion: made beside an existing ledger, never
        # in place of a missing one.
        refuse_missing_file(self._ledger_engine)
        try:
            with creating(), translated_errors(self.engine), self._writer.begin() as conn:
                conn.execute(CreateTable(processes, if_not_exists=True))
                for index in processes.indexes:
                    conn.execute(CreateIndex(index, if_not_exists=True))
        except DatabaseUnavailable as exc:
            raise LivenessUnavailable(str(exc)) from exc
        self._table_ready = True

    def _note_blocked(self, seconds: float) -> None:
        """A write waited ``seconds`` or failed: refreshes may have too, so distrust lapses."""
        if not self._one_write_lock:
            return
        if time.monotonic() >= self._blocked_until:
            log.warning(
                "lease store %s took %.1fs to accept a write (TTL %.1fs); not trusting "
                "lapsed leases for one TTL",
                mask(self.engine.url),
                seconds,
                self.ttl,
            )
        self._blocked_until = time.monotonic() + self.ttl
        self._blocked_for = seconds

    def _refuse_if_blocked(self) -> None:
        left = self._blocked_until - time.monotonic()
        if left > 0:
            raise LivenessUnavailable(
                f"lease store {mask(self.engine.url)} was blocked for {self._blocked_for:.1f}s "
                f"(TTL {self.ttl:.1f}s): lapsed leases are not trusted for another {left:.1f}s"
            )

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
        # With one write lock, read under it: this shows the store takes writes right now.
        with self._transaction(write=self._one_write_lock) as conn:
            now = self._now(conn)
            for chunk in chunked(ordered):
                rows = conn.execute(
                    select(processes.c.identity, processes.c.expires_at).where(
                        processes.c.identity.in_(chunk), processes.c.expires_at > now
                    )
                )
                left.update({r.identity: (r.expires_at - now).total_seconds() for r in rows})
        self._refuse_if_blocked()
        return left

    def processes(self) -> list[ProcessInfo]:
        with self._transaction(write=False) as conn:
            now = self._now(conn)
            rows = conn.execute(_live_query(now)).all()
        return [_info(row) for row in rows]

    def first_processes(self, limit: int) -> tuple[list[ProcessInfo], int]:
        """The first ``limit`` live processes by identity, and how many are alive in all."""
        with self._transaction(write=False) as conn:
            now = self._now(conn)
            rows = conn.execute(_live_query(now).limit(limit)).all()
            live = conn.execute(
                select(func.count()).select_from(processes).where(processes.c.expires_at > now)
            ).scalar_one()
        return [_info(row) for row in rows], live

    def known(self) -> set[str]:
        with self._transaction(write=False) as conn:
            return set(conn.execute(select(processes.c.identity)).scalars())

    def forget(self, identities: Collection[str]) -> None:
        ordered = list(identities)
        with self._transaction() as conn:
            now = self._now(conn)
            for chunk in chunked(ordered):
                conn.execute(
                    delete(processes).where(
                        processes.c.identity.in_(chunk),
                        processes.c.expires_at <= now,  # never forget a live process
                    )
                )

    def incarnation(self) -> Incarnation:
        return _INCARNATION

    def close(self) -> None:
        """Dispose of the engines made here from URLs; an Engine or Ledger given is left alone."""
        for engine in self._made:
            engine.dispose()


def _live_query(now: datetime) -> Select[Any]:
    """The live processes' lease rows, by identity."""
    return select(processes).where(processes.c.expires_at > now).order_by(processes.c.identity)


def _info(row: Row[Any]) -> ProcessInfo:
    return ProcessInfo(row.identity, row.host, row.pid, row.started_at, bool(row.quiet), row.busy)
