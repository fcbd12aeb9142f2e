"""Bulk reads and writes for verify, rebuild and export, one adapter per backend.

verify and rebuild read every event of a range of job ids in ``(job_id, version)``
order, and verify reads the projection rows of the same range *in the same
stream*, each where it falls among the jobs. On PostgreSQL the database merges
the two (a ``UNION ALL``), because Python's order of strings is not every
collation's; SQLite's order of UTF-8 text is Python's, and two cursors merged
here cost less than SQLite's own merge. Every adapter delivers rows of one shape:

* an event: ``(job_id, version, type, process, data, recorded_at, prev_hash, hash)``,
  sometimes followed by empty padding (``by_position`` adds the position instead);
* a projection row: ``(job_id, version, None, queue, state, attempt, claimed_by,
  claim_token, enqueued_at, claimed_at, heartbeat_at, finished_at, updated_at,
  last_error, last_hash)``. An event's type is never NULL, so ``None`` marks these.

``version`` is an int and every other value text or ``None``: payloads as the
stored JSON text, numbers as decimal text, and instants as the database's own
text for them (a *moment*). Verify and rebuild fold moments as they are: one
backend writes one instant as one text, so comparing texts compares instants,
and :meth:`Bulk.canonical_time` turns a moment into the hashed form with a few
slices. Building a datetime per value cost more than the rest of a row's work.

The adapters talk to the driver directly. PostgreSQL streams ``COPY (SELECT ...)
TO STDOUT`` in text format, parsed here: psycopg hands over COPY data several
times faster than it builds cursor rows. SQLite reads through sqlite3 without
SQLAlchemy's result layer. Other databases go through SQLAlchemy (:class:`CoreBulk`).
"""

from __future__ import annotations

import contextlib
import re
import selectors
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, Text, cast, insert, literal, null, select, union_all

from .encoding import canonical_time
from .projection import Draft
from .schema import EVENT_FIELDS, STATUS_FIELDS, events, jobs
from .storage.postgres import copy_sql
from .storage.rows import status_row

if TYPE_CHECKING:
    import sqlite3

    import psycopg

#: One row of the stream described above.
Row = Sequence[Any]
#: A batch of projection rows in the form an adapter's writer takes (picklable).
Batch = Any

#: Projection columns after ``job_id`` and ``version``, in stream order (row[3:]).
PROJECTION_TAIL = tuple(name for name in STATUS_FIELDS if name not in ("job_id", "version"))
_PADDING = len(PROJECTION_TAIL) - (len(EVENT_FIELDS) - 3)
#: Projection columns that hold instants, and integers (streamed as text).
INSTANTS = frozenset(c.name for c in jobs.columns if c.name.endswith("_at"))
NUMBERS = frozenset(("attempt", "claim_token"))


class Bulk:
    """A backend's bulk reads and writes (see the module's docstring)."""

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        """Rows of jobs with ``lower < job_id <= upper`` (``None``: unbounded), in job order.

        Events, and with ``projection`` the projection rows too.
        """
        raise NotImplementedError

    def by_position(self, since: int | None) -> Iterator[Row]:
        """Events after position ``since`` (all if ``None``) in position order, as
        ``(job_id, version, type, process, data, recorded_at, prev_hash, hash, position)``.
        """
        raise NotImplementedError

    def canonical_time(self, moment: str) -> str:
        """The hashed text of a moment (``YYYY-MM-DDTHH:MM:SS.ffffffZ``).

        A moment that is no instant (only an edit behind the ledger's back makes
        one) is returned as it is, so that its event fails the hash check.
        """
        instant = parse_moment(moment)
        return moment if instant is None else canonical_time(instant)

    def encode(self, drafts: list[Draft]) -> Batch:
        """Folded jobs as a batch for :meth:`writer`."""
        raise NotImplementedError

    def writer(self) -> contextlib.AbstractContextManager[Callable[[Batch], None]]:
        """A function inserting batches into the (emptied) projection, until the block ends."""
        raise NotImplementedError


# -- PostgreSQL (psycopg) -------------------------------------------------------------------


class PostgresBulk(Bulk):
    """COPY in text format on a psycopg connection whose session runs in UTC.

    Moments are PostgreSQL's ISO output (``2026-01-01 00:00:00.287+00``): the
    session's ``TimeZone`` must be UTC and its ``DateStyle`` ISO, which
    :func:`prepare_postgres_session` sets.
    """

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._conn = connection
        self._encoding = connection.info.encoding

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        from psycopg import sql  # noqa: PLC0415 (an optional driver, imported where used)

        where = _where(None if lower is None else "{lower}", None if upper is None else "{upper}")
        query = sql.SQL(_copy_query(where, projection)).format(  # COPY takes no parameters
            lower=sql.Literal(lower), upper=sql.Literal(upper)
        )
        with self._conn.cursor() as cursor, cursor.copy(query):
            yield from _copy_rows(_copy_out(self._conn), self._encoding)

    def by_position(self, since: int | None) -> Iterator[Row]:
        from psycopg import sql  # noqa: PLC0415 (an optional driver, imported where used)

        where = "" if since is None else " WHERE position > {since}"
        select_sql = f"SELECT {_EVENT_TEXT}, position FROM {events.name}{where} ORDER BY position"
        query = sql.SQL(f"COPY ({select_sql}) TO STDOUT").format(since=sql.Literal(since))
        with self._conn.cursor() as cursor, cursor.copy(query):
            yield from _copy_rows(_copy_out(self._conn), self._encoding)

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
    """UTC and ISO moments for :class:`PostgresBulk`, and no JIT, for this transaction.

    JIT compilation of the stream's query costs more than it saves on every
    size measured.
    """
    cursor.execute("SET LOCAL TIME ZONE 'UTC'")
    cursor.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    cursor.execute("SET LOCAL jit = off")


#: The event columns as text (but the version), for COPY.
_EVENT_TEXT = ", ".join(
    name if name in ("job_id", "version") else f"{name}::text" for name in EVENT_FIELDS
)


def _copy_query(where: str, projection: bool) -> str:
    event_columns = _EVENT_TEXT
    if not projection:
        select_sql = f"SELECT {event_columns} FROM {events.name}{where} ORDER BY job_id, version"
    else:
        padding = ", ''" * _PADDING
        tail = ", ".join(f"{name}::text" for name in PROJECTION_TAIL)
        # Identical column types on both sides, so that PostgreSQL merges the two
        # ordered scans (Merge Append) instead of sorting the whole union.
        select_sql = (
            f"SELECT {event_columns}{padding} FROM {events.name}{where} UNION ALL "
            f"SELECT job_id, version, NULL::text, {tail} FROM {jobs.name}{where} ORDER BY 1, 2"
        )
    return f"COPY ({select_sql}) TO STDOUT"


def _where(lower: str | None, upper: str | None) -> str:
    """``WHERE`` for a range of job ids, the bounds given as SQL (a literal, a mark)."""
    conditions = []
    if lower is not None:
        conditions.append(f"job_id > {lower}")
    if upper is not None:
        conditions.append(f"job_id <= {upper}")
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _copy_out(connection: psycopg.Connection[Any]) -> Iterator[memoryview]:
    """The rows of the ``COPY ... TO STDOUT`` that ``cursor.copy()`` has just started.

    Read from libpq's buffer directly (``PQgetCopyData``, waiting on the socket
    when it is empty) rather than with ``Copy.read()``, which runs a generator
    through psycopg's wait loop for every row: a quarter of reading a row. An
    unfinished COPY is still psycopg's to cancel when its block ends early.
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
            elif nulls == 1 and fields[3] == "\\N":
                fields[3] = None  # an event without a process
            else:
                fields = [None if field == "\\N" else field for field in fields]
        fields[1] = int(fields[1])
        yield fields


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


# -- SQLite (sqlite3) -----------------------------------------------------------------------


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

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        where = _where(None if lower is None else "?", None if upper is None else "?")
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
            # Two cursors, merged here: SQLite's own merge of a UNION ALL cost more
            # than the rest of reading an event, most of it for the padding columns.
            return _merged_by_job(
                self._conn.execute(f"{event_query} ORDER BY job_id, version", params),
                self._conn.execute(f"{row_query} ORDER BY job_id", params),
            )
        padding = ", ''" * _PADDING
        query = f"SELECT {columns}{padding} FROM {events.name}{where} UNION ALL {row_query}"
        return iter(self._conn.execute(f"{query} ORDER BY 1, 2", params + params))

    def by_position(self, since: int | None) -> Iterator[Row]:
        columns = ", ".join(EVENT_FIELDS)
        query = (
            f"SELECT {columns}, position FROM {events.name} WHERE position > ? ORDER BY position"
        )
        return iter(self._conn.execute(query, (-1 if since is None else since,)))

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
        while row is not None and row[0] <= event[0]:
            yield row
            row = next(rows, None)
        yield event
    if row is not None:
        yield row
        yield from rows


# -- anything else SQLAlchemy speaks ------------------------------------------------------


class CoreBulk(Bulk):
    """The same stream through SQLAlchemy, every value cast to text in the database."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        def bounded(query: Select[Any], table: Any) -> Select[Any]:
            if lower is not None:
                query = query.where(table.c.job_id > lower)
            if upper is not None:
                query = query.where(table.c.job_id <= upper)
            return query

        texts = [cast(events.c[name], Text) for name in EVENT_FIELDS[2:]]
        if not projection:
            query = select(events.c.job_id, events.c.version, *texts)
            return self._stream(bounded(query, events).order_by(events.c.job_id, events.c.version))
        padding = [literal("", Text)] * _PADDING
        labelled = [c.label(f"c{n}") for n, c in enumerate([*texts, *padding], start=2)]
        event_rows = bounded(select(events.c.job_id, events.c.version, *labelled), events)
        tail = [cast(jobs.c[name], Text) for name in PROJECTION_TAIL]
        rows = bounded(select(jobs.c.job_id, jobs.c.version, cast(null(), Text), *tail), jobs)
        merged = union_all(event_rows, rows).subquery()
        return self._stream(select(merged).order_by(merged.c.job_id, merged.c.version))

    def by_position(self, since: int | None) -> Iterator[Row]:
        texts = [cast(events.c[name], Text) for name in EVENT_FIELDS[2:]]
        query = select(events.c.job_id, events.c.version, *texts, events.c.position)
        if since is not None:
            query = query.where(events.c.position > since)
        return self._stream(query.order_by(events.c.position))

    def _stream(self, query: Select[Any]) -> Iterator[Row]:
        """Rows a batch at a time (a server-side cursor where the driver has one)."""
        options = {"stream_results": True, "yield_per": 10_000}
        return iter(self._conn.execute(query, execution_options=options))

    def encode(self, drafts: list[Draft]) -> Batch:
        return [
            {
                name: parse_moment(value) if name in INSTANTS and value is not None else value
                for name, value in zip(STATUS_FIELDS, status_row(d), strict=True)
            }
            for d in drafts
        ]

    @contextlib.contextmanager
    def writer(self) -> Iterator[Callable[[Batch], None]]:
        def write(batch: Batch) -> None:
            if batch:
                self._conn.execute(insert(jobs), batch)

        yield write


# -- moments ----------------------------------------------------------------------------------

_MOMENT = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(Z|[+-]\d\d(?::?\d\d)?)?"
)


def parse_moment(moment: str) -> datetime | None:
    """The UTC instant a moment stands for (no zone means UTC); ``None`` if it is none.

    For the rare paths (reports, other databases): Python 3.10's ``fromisoformat``
    reads neither PostgreSQL's ``+00`` nor fractions of other than 3 or 6 digits.
    """
    match = _MOMENT.fullmatch(moment.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        instant = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        instant -= offset if zone[0] == "+" else -offset
    return instant
