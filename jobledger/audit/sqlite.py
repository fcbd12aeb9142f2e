"""Bulk reads and writes on SQLite: sqlite3 cursors, without SQLAlchemy's result layer.

The rows are those described in :mod:`jobledger.audit.bulk`. Workers open the
database file themselves, each in a read transaction of its own (SQLite cannot
share a snapshot; see :mod:`jobledger.audit.shards`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator

from sqlalchemy import Connection

from ..projection import Draft
from ..schema import EVENT_FIELDS, STATUS_FIELDS, events, jobs
from ..storage.rows import status_row
from ..storage.sqlite import SQLITE_BUSY_TIMEOUT
from .bulk import (
    LINKS_SQL,
    NUMBERS,
    PADDING,
    PROJECTION_TAIL,
    Batch,
    Bulk,
    Row,
    position_query,
    where_clause,
)
from .shards import Source


class SqliteBulk(Bulk):
    """sqlite3 cursors on a connection with a read (or write) transaction open.

    Moments are the stored text, ``2026-01-01 00:00:00.287000`` as
    :class:`~jobledger.schema.UtcDateTime` writes it.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        # SQLite's BINARY order of UTF-8 text is Python's order of str (code points).
        (encoding,) = connection.execute("PRAGMA encoding").fetchone()
        self._python_order = encoding == "UTF-8"

    @classmethod
    def through(cls, conn: Connection) -> Bulk:
        return cls(conn.connection.driver_connection)  # type: ignore[arg-type]

    @classmethod
    def worker_source(cls, conn: Connection) -> Source | None:
        database = conn.engine.url.database
        if not database or "mode=memory" in str(conn.engine.url) or not os.path.isfile(database):
            return None  # in memory (private to this process), or a URI this cannot follow
        return Source(cls, (os.path.abspath(database),))

    @classmethod
    @contextlib.contextmanager
    def open_worker(cls, source: Source) -> Iterator[Bulk]:
        (path,) = source.args
        conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("BEGIN")  # one snapshot for all the worker's ranges, from its first read
            yield cls(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        where = where_clause(None if lower is None else "?", None if upper is None else "?")
        params = [b for b in (lower, upper) if b is not None]
        columns = ", ".join(EVENT_FIELDS)
        event_query = f"SELECT {columns} FROM {events.name}{where}"
        if not projection:
            return iter(self._conn.execute(f"{event_query} ORDER BY job_id, version", params))
        tail = ", ".join(
            f"CAST({name} AS TEXT)" if name in NUMBERS else name for name in PROJECTION_TAIL
        )
        row_query = f"SELECT job_id, version, NULL, {tail} FROM {jobs.name}{where}"
        if self._python_order:
            # Two cursors merged here beat SQLite's own UNION ALL (benchmarks/README.md).
            return _merged_by_job(
                self._conn.execute(f"{event_query} ORDER BY job_id, version", params),
                self._conn.execute(f"{row_query} ORDER BY job_id", params),
            )
        padding = ", ''" * PADDING
        query = f"SELECT {columns}{padding} FROM {events.name}{where} UNION ALL {row_query}"
        return iter(self._conn.execute(f"{query} ORDER BY 1, 2", params + params))

    def by_position(self, since: int | None, anchored: bool = False) -> Iterator[Row]:
        columns = ", ".join(f"e.{name}" for name in EVENT_FIELDS)
        query = position_query(columns, anchored, " WHERE e.position > ?")
        return iter(self._conn.execute(query, (-1 if since is None else since,)))

    def links(self) -> Iterator[Row]:
        return iter(self._conn.execute(LINKS_SQL))

    def canonical_time(self, moment: str) -> str:
        if len(moment) == 26 and moment[10] == " ":
            return f"{moment[:10]}T{moment[11:]}Z"
        return super().canonical_time(moment)

    def encode(self, drafts: list[Draft]) -> Batch:
        return [status_row(d) for d in drafts]

    @contextlib.contextmanager
    def writer(self) -> Iterator[Callable[[Batch], None]]:
        marks = ", ".join("?" * len(STATUS_FIELDS))
        statement = f"INSERT INTO {jobs.name} ({', '.join(STATUS_FIELDS)}) VALUES ({marks})"

        def write(batch: Batch) -> None:
            self._conn.executemany(statement, batch)

        yield write


def _merged_by_job(events: Iterator[Row], rows: Iterator[Row]) -> Iterator[Row]:
    """Events and projection rows, both in job order, as one stream in job order."""
    row = next(rows, None)
    for event in events:
        while row is not None and row[0] <= event[0]:  # job ids
            yield row
            row = next(rows, None)
        yield event
    if row is not None:
        yield row
        yield from rows
