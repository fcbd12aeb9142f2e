"""How verify, rebuild and export read: one snapshot, bulk access, workers, progress.

Reads that must agree with each other (events and projection rows in
``verify``) run in one REPEATABLE READ transaction on PostgreSQL (whose
snapshot every worker imports, :mod:`jobledger.audit.shards`) and one read
transaction on SQLite, so concurrent appends cannot make them disagree.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from ..database import translated_errors
from ..schema import events
from ..storage import BulkAccess, backend_for
from . import shards
from .bulk import Bulk, CoreBulk
from .postgres import PostgresBulk
from .sqlite import SqliteBulk

#: Events per progress report, and jobs per batch of rows a rebuild writes.
BATCH_SIZE = 10_000
#: Below this many events verify and rebuild work in one process: starting
#: workers (a process and a connection each) would cost more than it saves.
MIN_PARALLEL_EVENTS = 50_000
#: Workers by default: one per usable CPU, at most this many. Each is a process and
#: a database connection; an audit on a large host should not take a pool's worth
#: of connections from the server unasked (``workers=`` sets any number).
DEFAULT_MAX_WORKERS = 8

#: ``progress(done, total)``: events processed so far, and how many there are.
Progress = Callable[[int, int], None]


@contextlib.contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A transaction whose reads all see one consistent state of the database."""
    backend = backend_for(engine)
    with translated_errors(engine), engine.connect() as conn:
        backend.prepare_snapshot(conn)
        with conn.begin():  # SQLite: one BEGIN .. COMMIT sees one WAL snapshot
            backend.utc_session(conn)
            yield conn


#: The bulk adapter for each way a backend offers to read and write whole tables.
ADAPTERS: dict[BulkAccess, type[Bulk]] = {
    BulkAccess.POSTGRES_COPY: PostgresBulk,
    BulkAccess.SQLITE3: SqliteBulk,
    BulkAccess.SQLALCHEMY: CoreBulk,
}


def adapter_for(conn: Connection) -> type[Bulk]:
    """The bulk adapter for ``conn``'s backend and driver."""
    return ADAPTERS[backend_for(conn).bulk_access(conn.dialect)]


def bulk_for(conn: Connection) -> Bulk:
    """Bulk access through ``conn``'s own transaction."""
    return adapter_for(conn).through(conn)


def worker_source(conn: Connection) -> shards.Source | None:
    """How workers reach ``conn``'s database in its snapshot; ``None`` if they cannot.

    On PostgreSQL this exports the transaction's snapshot, so it must run before
    the connection starts a COPY.
    """
    return adapter_for(conn).worker_source(conn)


def count_events(conn: Connection, since: int | None = None) -> int:
    """How many events there are (after position ``since``)."""
    query = select(func.count()).select_from(events)
    if since is not None:
        query = query.where(events.c.position > since)
    total: int = conn.execute(query).scalar_one()
    return total


def default_workers() -> int:
    """One per CPU this process may run on (a container's cpuset), up to the cap."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(usable or 1, DEFAULT_MAX_WORKERS))


def worker_plan(
    conn: Connection, total: int, workers: int | None
) -> tuple[shards.Source, list[shards.Range], int] | None:
    """How workers connect, their ranges, how many workers; ``None``: work in this process.

    Workers take :data:`MIN_PARALLEL_EVENTS` events or more, when they can be
    forked (:func:`shards.can_fork`) and reach the database (:func:`worker_source`,
    which must run before the connection starts a COPY).
    """
    count = default_workers() if workers is None else workers
    if count < 2 or total < MIN_PARALLEL_EVENTS or not shards.can_fork():
        return None
    source = worker_source(conn)
    if source is None:
        return None
    ranges = shards.plan(conn, total, count * shards.RANGES_PER_WORKER)
    return (source, ranges, count) if len(ranges) > 1 else None


class Tracker:
    """Sums the progress workers report, for the caller's ``progress(done, total)``."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def handle(self, kind: str, payload: Any) -> None:
        """A worker's message (see :data:`shards.Emit`); counts ``progress`` ones."""
        if kind == "progress":
            self.add(payload)

    def add(self, events: int) -> None:
        self.done += events
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.done)
