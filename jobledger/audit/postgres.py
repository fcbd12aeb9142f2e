"""Bulk reads and writes on PostgreSQL: COPY in text format, parsed here.

psycopg hands over COPY data several times faster than it builds cursor rows
(see ``benchmarks/README.md``), so verify, rebuild and export stream
``COPY (SELECT ...) TO STDOUT`` and rebuild writes with ``COPY ... FROM STDIN``.
The rows are those described in :mod:`jobledger.audit.bulk`.
"""

from __future__ import annotations

import contextlib
import re
import selectors
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ..errors import DatabaseUnavailable
from ..projection import Draft
from ..schema import EVENT_FIELDS, STATUS_FIELDS, events, jobs
from ..storage.postgres import copy_sql
from ..storage.rows import status_row
from .bulk import (
    LINKS_SQL,
    PADDING,
    PROJECTION_TAIL,
    Batch,
    Bulk,
    EventRow,
    Row,
    position_query,
    where_clause,
)
from .shards import Source

if TYPE_CHECKING:
    import psycopg


class PostgresBulk(Bulk):
    """COPY in text format on a psycopg connection whose session runs in UTC.

    Moments are PostgreSQL's ISO output (``2026-01-01 00:00:00.287+00``): the
    session's ``TimeZone`` must be UTC and its ``DateStyle`` ISO, which
    :func:`prepare_postgres_session` sets.
    """

    #: A connection that writes by COPY cannot read another COPY meanwhile.
    reads_while_writing = False

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._conn = connection
        self._encoding = connection.info.encoding

    @classmethod
    def through(cls, conn: Connection) -> Bulk:
        driver: Any = conn.connection.driver_connection
        with driver.cursor() as cursor:
            prepare_postgres_session(cursor)
        return cls(driver)

    @classmethod
    def worker_source(cls, conn: Connection) -> Source:
        args, kwargs = conn.dialect.create_connect_args(conn.engine.url)
        snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        return Source(cls, tuple(args), dict(kwargs), snapshot)

    @classmethod
    @contextlib.contextmanager
    def open_worker(cls, source: Source) -> Iterator[Bulk]:
        import psycopg  # noqa: PLC0415 (an optional driver, imported where used)

        try:
            conn = psycopg.connect(*source.args, **source.kwargs)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"an audit worker cannot connect: {exc}") from None
        with conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.cursor() as cursor:
                if source.snapshot is not None:  # must come first in the transaction
                    statement = psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}")
                    cursor.execute(statement.format(psycopg.sql.Literal(source.snapshot)))
                prepare_postgres_session(cursor)
            yield cls(conn)
            conn.rollback()

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        from psycopg import sql  # noqa: PLC0415 (an optional driver, imported where used)

        where = where_clause(
            None if lower is None else "{lower}", None if upper is None else "{upper}"
        )
        query = sql.SQL(_copy_query(where, projection)).format(  # COPY takes no parameters
            lower=sql.Literal(lower), upper=sql.Literal(upper)
        )
        with self._conn.cursor() as cursor, cursor.copy(query):
            yield from _copy_rows(_copy_out(self._conn), self._encoding)

    def by_position(self, since: int | None, anchored: bool = False) -> Iterator[Row]:
        from psycopg import sql  # noqa: PLC0415 (an optional driver, imported where used)

        where = "" if since is None else " WHERE e.position > {since}"
        columns = ", ".join(
            f"e.{name}" if name in ("job_id", "version") else f"e.{name}::text"
            for name in EVENT_FIELDS
        )
        select_sql = position_query(columns, anchored, where, window=True)
        query = sql.SQL(f"COPY ({select_sql}) TO STDOUT").format(since=sql.Literal(since))
        with self._conn.cursor() as cursor, cursor.copy(query):
            yield from _copy_rows(_copy_out(self._conn), self._encoding)

    def links(self) -> Iterator[Row]:
        with self._conn.cursor() as cursor, cursor.copy(f"COPY ({LINKS_SQL}) TO STDOUT"):
            for data in _copy_out(self._conn):
                line = str(data[:-1], self._encoding)
                fields: list[Any] = line.split("\t")
                if "\\" in line:  # a missing event's NULLs, or an escaped job id
                    fields = [_copy_value(field) for field in fields]
                fields[0], fields[1], fields[3] = int(fields[0]), int(fields[1]), int(fields[3])
                if fields[6] is not None:
                    fields[6] = int(fields[6])
                yield fields

    def canonical_time(self, moment: str) -> str:
        # "2026-01-01 00:00:00.287+00": the output drops trailing zeros of the fraction.
        size = len(moment)
        if 24 <= size <= 29 and moment[19] == "." and moment[10] == " " and moment[-3:] == "+00":
            return moment[:10] + "T" + moment[11:-3] + _ZEROS[size - 23] + "Z"
        if size == 22 and moment[10] == " " and moment[-3:] == "+00":
            return moment[:10] + "T" + moment[11:19] + ".000000Z"
        return super().canonical_time(moment)

    def encode(self, drafts: list[Draft]) -> Batch:
        return "".join([_copy_line(status_row(d)) for d in drafts]).encode(self._encoding)

    @contextlib.contextmanager
    def writer(self) -> Iterator[Callable[[Batch], None]]:
        with (
            self._conn.cursor() as cursor,
            cursor.copy(copy_sql(jobs.name, STATUS_FIELDS)) as copy,
        ):
            yield copy.write


#: Zeros that pad a fraction of ``n`` digits to six: ``_ZEROS[n]``.
_ZEROS = tuple("0" * (6 - n) for n in range(7))


def prepare_postgres_session(cursor: Any) -> None:
    """UTC and ISO moments for :class:`PostgresBulk`, no JIT and no parallel query, for this
    transaction.

    Compiling these queries costs more than the compiled plans save. The audit's own
    workers are the parallelism, and the coordinator checks the anchor beside them:
    PostgreSQL's parallel workers for any of their queries would only crowd the same
    CPUs (the anchor's join, hashed and sorted in parallel, took 1.5 times the CPU time).
    """
    cursor.execute("SET LOCAL TIME ZONE 'UTC'")
    cursor.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    cursor.execute("SET LOCAL jit = off")
    cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")


#: The event columns as text (but the version), for COPY.
_EVENT_TEXT = ", ".join(
    name if name in ("job_id", "version") else f"{name}::text" for name in EVENT_FIELDS
)


def _copy_query(where: str, projection: bool) -> str:
    event_columns = _EVENT_TEXT
    if not projection:
        select_sql = f"SELECT {event_columns} FROM {events.name}{where} ORDER BY job_id, version"
    else:
        padding = ", ''" * PADDING
        tail = ", ".join(f"{name}::text" for name in PROJECTION_TAIL)
        # Identical column types on both sides, so that PostgreSQL merges the two
        # ordered scans (Merge Append) instead of sorting the whole union.
        select_sql = (
            f"SELECT {event_columns}{padding} FROM {events.name}{where} UNION ALL "
            f"SELECT job_id, version, NULL::text, {tail} FROM {jobs.name}{where} ORDER BY 1, 2"
        )
    return f"COPY ({select_sql}) TO STDOUT"


def _copy_out(connection: psycopg.Connection[Any]) -> Iterator[memoryview]:
    """The rows of the ``COPY ... TO STDOUT`` that ``cursor.copy()`` has just started.

    Read from libpq's buffer directly (``PQgetCopyData``, waiting on the socket
    when it is empty) rather than with ``Copy.read()``, which runs psycopg's wait
    loop for every row (benchmarks/README.md). An unfinished COPY is still
    psycopg's to cancel when its block ends early.
    """
    import psycopg  # noqa: PLC0415 (an optional driver, imported where used)

    pgconn = connection.pgconn
    get = pgconn.get_copy_data
    with selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, selectors.EVENT_READ)
        while True:
            size, data = get(1)  # 1: never block while holding the GIL
            if size > 0:
                yield data
            elif size == 0:
                selector.select()
                pgconn.consume_input()
            else:
                break
    # The COPY is over: take its result, so that the connection is idle again.
    while (result := pgconn.get_result()) is not None:
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(result, encoding=connection.info.encoding)


def _copy_rows(chunks: Iterator[memoryview], encoding: str) -> Iterator[list[Any]]:
    """Parse COPY text rows: tab-separated, ``\\N`` for NULL, backslash escapes."""
    for data in chunks:
        line = str(data[:-1], encoding)  # every row ends in "\n"
        fields: list[Any] = line.split("\t")
        if "\\" in line:  # escapes are rare, but NULLs are written \N
            nulls = fields.count("\\N")
            if nulls != line.count("\\"):
                fields = [_copy_value(field) for field in fields]
            elif nulls == 1 and fields[_PROCESS] == "\\N":
                fields[_PROCESS] = None  # an event without a process
            else:
                fields = [None if field == "\\N" else field for field in fields]
        fields[_VERSION] = int(fields[_VERSION])
        yield fields


_VERSION = EventRow._fields.index("version")
_PROCESS = EventRow._fields.index("process")
_COPY_ESCAPE = re.compile(r"\\(.)")
_COPY_UNESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _copy_value(field: str) -> str | None:
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    # COPY's text output escapes only these; "\x" for any other x means x.
    return _COPY_ESCAPE.sub(lambda m: _COPY_UNESCAPED.get(m.group(1), m.group(1)), field)


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_line(values: Sequence[Any]) -> str:
    """One row of COPY text input."""
    line = "\t".join(["\\N" if v is None else str(v) for v in values])
    # Escaping is rare: check the joined line once, not each value.
    if (
        line.count("\t") == len(values) - 1
        and line.count("\\") == values.count(None)
        and "\n" not in line
        and "\r" not in line
    ):
        return line + "\n"
    return "\t".join([_copy_text(v) for v in values]) + "\n"


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    if _COPY_SPECIAL.search(text) is None:
        return text
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
