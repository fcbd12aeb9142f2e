"""SQL for appending events and reading them back.

An append never holds a transaction open across application code. The job's
row is read (with the database clock), the ledger decides in Python, and the
write is guarded by the version that was read: the projection row is updated
``WHERE version = expected`` and the event is inserted only if that update
matched. A writer that lost a race therefore writes nothing at all and is told
so (``None``), and ``UNIQUE(job_id, version)`` backs the guard up.

On PostgreSQL the guarded write is ONE statement in autocommit mode (a
data-modifying CTE), so a command costs two round trips: read, write. Other
databases run the same two statements in a short ``BEGIN IMMEDIATE``-style
transaction.

A holder that knows the row it wrote last can skip the read (PostgreSQL only,
:meth:`Store.append_unread`): its write is guarded by that version, and its
timestamp, taken from this process's clock corrected by the offset the last
read measured, must lie within :data:`CLOCK_TOLERANCE` of the database clock
as the statement runs. A refused write writes nothing; the caller then reads
and decides as usual.

Commands are the hot path, so they skip SQLAlchemy's per-execution machinery:
their statements are compiled once and run straight on a DBAPI connection that
the store keeps checked out between commands (see :class:`DriverStatement` and
:class:`~jobledger.database.HeldConnections`). One consequence: engine events
and ``echo`` logging do not see command statements. Everything else (batches,
reads) goes through SQLAlchemy as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Integer,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.elements import ColumnElement

from .database import HeldConnections, raise_translated, translated_errors
from .records import Event, JobStatus
from .schema import EVENT_FIELDS, STATUS_FIELDS, Json, UtcDateTime, events, jobs

# Commands build JobStatus positionally from the projection's columns.
if tuple(field.name for field in dataclasses.fields(JobStatus)) != STATUS_FIELDS:
    raise RuntimeError("JobStatus fields must follow the columns of jobledger_jobs, in order")


def status_from_row(row: Any) -> JobStatus:
    return JobStatus(**{name: row._mapping[name] for name in STATUS_FIELDS})


def event_from_row(row: Any) -> Event:
    return Event(position=row.position, **{name: row._mapping[name] for name in EVENT_FIELDS})


#: A status (or a fold's draft) and an event as tuples in column order; attrgetter runs in C.
status_row = operator.attrgetter(*STATUS_FIELDS)
event_row = operator.attrgetter(*EVENT_FIELDS)


def status_values(status: JobStatus) -> dict[str, Any]:
    return dict(zip(STATUS_FIELDS, status_row(status), strict=True))


def event_values(event: Event) -> dict[str, Any]:
    return dict(zip(EVENT_FIELDS, event_row(event), strict=True))


def database_clock(dialect_name: str) -> ColumnElement[datetime]:
    """The database server's current time: the only clock event timestamps come from."""
    if dialect_name == "postgresql":
        return func.now(type_=UtcDateTime)
    if dialect_name == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M:%f", "now", type_=UtcDateTime)
    if dialect_name in ("mysql", "mariadb"):
        return func.utc_timestamp(6, type_=UtcDateTime)
    return func.current_timestamp(type_=UtcDateTime)


#: How far a timestamp chosen by this process may lie from the database clock.
CLOCK_TOLERANCE = timedelta(milliseconds=100)


@dataclass(frozen=True)
class _Statements:
    load: Any
    clock: Any
    guarded_update: Any
    insert_event: Any
    insert_status: Any
    insert_events_many: Any
    pg_append: Any
    pg_append_unread: Any
    pg_create: Any


def _statements(dialect_name: str) -> _Statements:
    clock = database_clock(dialect_name).label("now")
    one = select(literal_column("1").label("one")).subquery("one")
    load = select(clock, *jobs.c).select_from(
        one.outerjoin(jobs, jobs.c.job_id == bindparam("job_id"))
    )
    guarded_update = (
        update(jobs)
        .where(jobs.c.job_id == bindparam("j_job_id"), jobs.c.version == bindparam("expected"))
        .values({name: bindparam("j_" + name) for name in STATUS_FIELDS if name != "job_id"})
    )
    tx_id = func.pg_current_xact_id() if dialect_name == "postgresql" else None
    insert_event = insert(events).values(tx_id=tx_id).returning(events.c.position)
    insert_status = insert(jobs)
    insert_events_many = insert(events).values(tx_id=tx_id)
    pg_append = pg_append_unread = pg_create = None
    if dialect_name == "postgresql":
        pg_append = _pg_append(guarded_update.returning(jobs.c.job_id).cte("moved"))
        stamped = bindparam("e_recorded_at", type_=UtcDateTime)
        tolerance: Any = literal_column(f"interval '{CLOCK_TOLERANCE.total_seconds():g} seconds'")
        on_the_clock = stamped.between(func.now() - tolerance, func.now() + tolerance)
        pg_append_unread = _pg_append(
            guarded_update.where(on_the_clock).returning(jobs.c.job_id).cte("moved")
        )
        created = (
            postgresql.insert(jobs)
            .values({name: bindparam("j_" + name) for name in STATUS_FIELDS})
            .on_conflict_do_nothing(index_elements=[jobs.c.job_id])
            .returning(jobs.c.job_id)
            .cte("created")
        )
        pg_create = _pg_append(created)
    return _Statements(
        load=load,
        clock=select(clock),
        guarded_update=guarded_update,
        insert_event=insert_event,
        insert_status=insert_status,
        insert_events_many=insert_events_many,
        pg_append=pg_append,
        pg_append_unread=pg_append_unread,
        pg_create=pg_create,
    )


def _pg_append(guard: Any) -> Any:
    """INSERT the event only for the row the ``guard`` CTE wrote: all or nothing, one statement."""
    types: dict[str, Any] = {"version": Integer(), "data": Json, "recorded_at": UtcDateTime}
    row: Any = select(
        guard.c.job_id,
        *(bindparam("e_" + n, type_=types.get(n, String())) for n in EVENT_FIELDS[1:]),
        func.pg_current_xact_id(),
    ).select_from(guard)
    columns = [events.c[name] for name in EVENT_FIELDS] + [events.c.tx_id]
    return insert(events).from_select(columns, row).returning(events.c.position)


class DriverStatement:
    """A statement compiled once for one dialect and run straight on a DBAPI cursor.

    SQLAlchemy's per-execution work (cache lookup, execution context, events,
    result wrapping) cost a command more CPU than the driver itself did. Values
    still pass through the column types' own bind and result processors, so what
    is stored and read back is exactly what SQLAlchemy would store and read.

    The caller passes its values as one flat tuple laid out as ``source`` names
    them (say ``("expected", "j_job_id", ...)``): picking the statement's
    parameters out of it is then a single ``itemgetter`` call, with no dict built.
    """

    def __init__(
        self,
        statement: Any,
        dialect: Dialect,
        source: Sequence[str] = (),
        column_keys: Sequence[str] | None = None,
    ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql: str = compiled.string
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        #: Bind names in the order the driver takes them (positional dialects) or any order.
        self.names: tuple[str, ...] = tuple(compiled.positiontup or binds)
        self._positional = bool(dialect.positional)
        # Literals the statement carries (SQLite's strftime format, a NULL tx_id) are
        # processed once, here; the caller supplies every other value.
        self._fixed: dict[str, Any] = {}
        self._processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.names):
            bind = binds[name]
            process = _bind_processor(bind.type, dialect)
            if not bind.required:
                value = bind.effective_value
                self._fixed[name] = process(value) if process is not None else value
            elif process is not None:
                self._processors.append((index, process))
        # Fixed values ride at the end of the caller's tuple.
        self._tail = tuple(self._fixed.values())
        where = {name: i for i, name in enumerate((*source, *self._fixed))}
        self._pick = _tuple_getter([where[name] for name in self.names])
        columns = getattr(statement, "selected_columns", ())
        self._readers = [
            (index, reader)
            for index, column in enumerate(columns)
            if (reader := _result_processor(column.type, dialect))
        ]

    def parameters(self, values: tuple[Any, ...]) -> Any:
        """The driver's parameters for ``values`` (laid out as ``source`` says)."""
        out = self.row(values)
        if self._positional:
            return out
        return dict(zip(self.names, out, strict=True))

    def row(self, values: tuple[Any, ...]) -> list[Any]:
        """The processed values, in the order of :attr:`names`."""
        out = list(self._pick(values + self._tail if self._tail else values))
        for index, process in self._processors:
            out[index] = process(out[index])
        return out

    def read(self, row: Sequence[Any]) -> list[Any]:
        """A result row with every column converted as SQLAlchemy would."""
        out = list(row)
        for index, reader in self._readers:
            out[index] = reader(out[index])
        return out


def _bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    processor = type_.dialect_impl(dialect).bind_processor(dialect)
    if isinstance(type_, UtcDateTime) and processor is not None:
        return _verified(_fast_datetime_bind(dialect), processor, _BIND_PROBES)
    return processor  # type: ignore[no-any-return]


def _result_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    processor = type_.dialect_impl(dialect).result_processor(dialect, None)
    if isinstance(type_, UtcDateTime) and processor is not None:
        probes = _TEXT_PROBES if dialect.name == "sqlite" else _BIND_PROBES
        return _verified(_fast_datetime_result(dialect), processor, probes)
    return processor  # type: ignore[no-any-return]


# A command converts a dozen timestamps each way; SQLAlchemy's TypeDecorator
# chain for UtcDateTime (a wrapper, our hook, the dialect's formatter) cost more
# than anything else in the store. These one-step versions are used only if they
# give exactly SQLAlchemy's results on the probes below; otherwise SQLAlchemy's own.
_UTC = timezone.utc


def _fast_datetime_bind(dialect: Dialect) -> Callable[[Any], Any]:
    as_text = dialect.name == "sqlite"

    def bind(value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("jobledger stores only timezone-aware datetimes")
        value = value.astimezone(_UTC)
        if as_text:  # SQLAlchemy's SQLite storage format, microseconds always written
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    return bind


def _fast_datetime_result(dialect: Dialect) -> Callable[[Any], Any]:
    from_text = dialect.name == "sqlite"

    def result(value: Any) -> datetime | None:
        if value is None:
            return None
        if from_text:
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)  # type: ignore[no-any-return]
        return value.astimezone(_UTC)  # type: ignore[no-any-return]

    return result


def _verified(
    fast: Callable[[Any], Any], reference: Callable[[Any], Any], probes: Sequence[Any]
) -> Callable[[Any], Any]:
    """``fast`` if it agrees with ``reference`` (value and type) on every probe."""
    for probe in probes:
        try:
            expected = reference(probe)
        except Exception:  # a probe the reference refuses tells nothing
            continue
        got = fast(probe)
        if got != expected or type(got) is not type(expected) or _zone(got) != _zone(expected):
            return reference
    return fast


def _zone(value: Any) -> Any:
    return value.utcoffset() if isinstance(value, datetime) else None


_BIND_PROBES: tuple[Any, ...] = (
    None,
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 7, 1, 0, 0, 0, 5, tzinfo=timezone(timedelta(hours=-7))),
)
_TEXT_PROBES: tuple[Any, ...] = (
    None,
    "2026-01-02 03:04:05.678901",
    "2026-01-02 03:04:05.000000",
    "2026-01-02 03:04:05.678",  # the SQLite clock's own format (milliseconds)
    "0999-12-31 23:59:59.000001",
)


def _tuple_getter(indexes: Sequence[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """``values -> (values[i] for each i)`` as a tuple, in C (``itemgetter``)."""
    if not indexes:
        return lambda values: ()
    if len(indexes) == 1:
        (index,) = indexes
        return lambda values: (values[index],)
    return operator.itemgetter(*indexes)


@dataclass(frozen=True)
class _DriverStatements:
    load: DriverStatement
    pg_append: DriverStatement | None = None
    pg_append_unread: DriverStatement | None = None
    pg_create: DriverStatement | None = None
    guarded_update: DriverStatement | None = None
    insert_event: DriverStatement | None = None
    insert_status: DriverStatement | None = None
    #: PostgreSQL batches: the transaction's clock and id, and the rows to COPY.
    batch_clock: DriverStatement | None = None
    jobs_rows: DriverStatement | None = None
    events_rows: DriverStatement | None = None
    jobs_copy: str = ""
    events_copy: str = ""


#: How a write lays out its values: the expected version, the new status, the event.
_WRITE_SOURCE = (
    "expected",
    *("j_" + name for name in STATUS_FIELDS),
    *("e_" + name for name in EVENT_FIELDS),
)


def _write_values(expected: int, status: JobStatus, event: Event) -> tuple[Any, ...]:
    return (expected, *status_row(status), *event_row(event))


def _driver_statements(sql: _Statements, dialect: Dialect) -> _DriverStatements:
    load = DriverStatement(sql.load, dialect, ("job_id",))
    if dialect.name == "postgresql":
        jobs_rows = DriverStatement(sql.insert_status, dialect, STATUS_FIELDS, STATUS_FIELDS)
        events_rows = DriverStatement(sql.insert_events_many, dialect, EVENT_FIELDS, EVENT_FIELDS)
        return _DriverStatements(
            load=load,
            pg_append=DriverStatement(sql.pg_append, dialect, _WRITE_SOURCE),
            pg_append_unread=DriverStatement(sql.pg_append_unread, dialect, _WRITE_SOURCE),
            pg_create=DriverStatement(sql.pg_create, dialect, _WRITE_SOURCE),
            batch_clock=DriverStatement(
                select(sql.clock.selected_columns[0], cast(func.pg_current_xact_id(), Text)),
                dialect,
            ),
            jobs_rows=jobs_rows,
            events_rows=events_rows,
            # COPY takes the columns in the order the rows are laid out.
            jobs_copy=copy_sql(jobs.name, jobs_rows.names),
            events_copy=copy_sql(events.name, (*events_rows.names, "tx_id")),
        )
    return _DriverStatements(
        load=load,
        guarded_update=DriverStatement(sql.guarded_update, dialect, _WRITE_SOURCE),
        insert_event=DriverStatement(sql.insert_event, dialect, EVENT_FIELDS, EVENT_FIELDS),
        insert_status=DriverStatement(sql.insert_status, dialect, STATUS_FIELDS, STATUS_FIELDS),
    )


def copy_sql(table: str, columns: Sequence[str]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN"


def _cursor(conn: PoolProxiedConnection) -> Any:
    """``conn``'s cursor for commands, made once per DBAPI connection.

    Creating a psycopg cursor per statement cost about as much CPU as running
    the statement. Every command reads its results to the end before the next
    statement, so one cursor per connection serves them all.
    """
    dbapi_connection = conn.dbapi_connection
    made = conn.info.get(_CURSOR)
    if made is None or made[0] is not dbapi_connection:
        made = conn.info[_CURSOR] = (dbapi_connection, conn.cursor())
    return made[1]


_CURSOR = "jobledger.command_cursor"


def _first_value(cursor: Any) -> int | None:
    """The first column of the cursor's first row, or ``None`` if it returned no row."""
    rows = cursor.fetchall()  # to the end: SQLite cannot commit while a statement is pending
    return int(rows[0][0]) if rows else None


class LostRace(Exception):
    """Another writer appended to the job first; nothing was written. Internal: retried."""


class Command:
    """One read-decide-write cycle on one job: ``with store.command(job_id) as command``.

    Entering loads the job (see :meth:`Store.command`); leaving commits or rolls
    back and turns driver errors into jobledger's, as :func:`translated_errors`
    does. A class rather than a ``contextlib`` generator: it runs for every
    command, and contextlib's machinery cost more than the bookkeeping itself.
    """

    status: JobStatus | None
    now: datetime

    def __init__(self, store: Store, job_id: str) -> None:
        self._store, self._job_id = store, job_id

    def __enter__(self) -> Command:
        try:
            self._conn, self.status, self.now = self._store._start(self._job_id)
        except sa_exc.DBAPIError as exc:
            raise_translated(exc, self._store.engine)
        return self

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        try:
            self._store._finish(self._conn, exc)
        except sa_exc.DBAPIError as error:  # the commit itself failed
            raise_translated(error, self._store.engine)
        if isinstance(exc, sa_exc.DBAPIError):
            raise_translated(exc, self._store.engine)

    def write(self, event: Event, status: JobStatus) -> int:
        """Store ``event`` and the job's new ``status``; its position. ``LostRace`` if beaten."""
        if self.status is None:
            position = self._store._create(self._conn, event, status)
        else:
            position = self._store._append(self._conn, self.status.version, event, status)
        if position is None:
            raise LostRace(event.job_id)
        return position

    def write_all(self, steps: Sequence[tuple[Event, JobStatus]]) -> None:
        """Store consecutive events of the job all together or not at all. ``LostRace``.

        Each step is guarded by the version the previous one wrote. On PostgreSQL,
        where a single append commits by itself, the steps share one explicit
        transaction: a crash between two of them must not leave half a decision
        (an ``abandoned`` without the ``requeued`` that the policy asked for).
        """
        if len(steps) == 1:
            self.write(*steps[0])
            return
        store, expected = self._store, self.status
        if store.is_postgres:
            store._execute(self._conn, "BEGIN", ())
        for event, status in steps:
            if expected is None:
                position = store._create(self._conn, event, status)
            else:
                position = store._append(self._conn, expected.version, event, status)
            if position is None:
                raise LostRace(event.job_id)
            expected = status
        if store.is_postgres:
            store._execute(self._conn, "COMMIT", ())


class Store:
    """Reads and guarded writes of events and projection rows for one Engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.is_postgres = self.dialect == "postgresql"
        self._sql = _statements(self.dialect)
        # Batches without COPY: BEGIN IMMEDIATE on SQLite (the option means nothing elsewhere).
        self._batch_engine = engine.execution_options(jobledger_write=True)
        self._held = HeldConnections(engine, autocommit=self.is_postgres)
        self._copies_batches = self.is_postgres and engine.dialect.driver == "psycopg"
        # Compiled on the first command: the dialect knows the server only once connected.
        self._driver_sql: _DriverStatements | None = None
        #: Database clock minus this process's, in seconds, as the last read saw it.
        self._clock_offset: float | None = None

    def close(self) -> None:
        """Return the connections held for commands to the pool."""
        self._held.close()

    def command(self, job_id: str) -> Command:
        """Load ``job_id`` and the database clock, for the caller to decide and write.

        On PostgreSQL the read and the (single-statement) write each run in
        autocommit; the write's version guard makes the gap between them safe.
        Elsewhere the whole cycle is one ``BEGIN IMMEDIATE`` transaction, so a
        refusal raised by the caller rolls back everything.
        """
        return Command(self, job_id)

    def _finish(self, conn: PoolProxiedConnection, exc: BaseException | None) -> None:
        """End a command: commit (off PostgreSQL) and keep ``conn``, or roll back after ``exc``."""
        if exc is None:
            try:
                if not self.is_postgres:
                    self._call(conn, "COMMIT", conn.commit)
            except BaseException as error:
                self._abort(conn, error)
                raise
            self._held.give_back(conn)
        else:
            self._abort(conn, exc)

    def _start(self, job_id: str) -> tuple[PoolProxiedConnection, JobStatus | None, datetime]:
        """A connection with ``job_id`` loaded (and, off PostgreSQL, the write lock taken).

        A held connection may have died since its last command (a database
        restart): nothing was written yet, so the load is retried once on a fresh
        connection, which the pool pre-pings. This is what keeps a worker going
        across database restarts.
        """
        while True:
            conn, was_held = self._held.take()
            try:
                if not self.is_postgres:
                    # Take the write lock up front: a WAL reader that later tries to
                    # upgrade to a writer fails at once instead of waiting its turn.
                    self._execute(conn, "BEGIN IMMEDIATE", ())
                return (conn, *self._load(conn, job_id))
            except BaseException as exc:
                self._abort(conn, exc)
                retry = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
                if not (was_held and retry):
                    raise

    def _abort(self, conn: PoolProxiedConnection, exc: BaseException) -> None:
        """Roll back after ``exc`` and keep ``conn`` if it is still known to be sound."""
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            self._held.discard(conn, broken=True)
        elif not isinstance(exc, Exception):  # interrupted inside the driver: state unknown
            self._held.discard(conn, broken=False)
        else:
            try:
                conn.rollback()  # no round trip on an idle autocommit psycopg connection
            except Exception:
                self._held.discard(conn, broken=False)
                return
            self._held.give_back(conn)

    def prepare(self) -> None:
        """Connect once and compile the command statements now instead of at the first command."""
        with translated_errors(self.engine), self.engine.connect():
            pass  # the dialect learns the server's version (RETURNING support) on connect
        self._driver()

    def warm_up(self) -> None:
        """Open a connection for commands now (and, on PostgreSQL, read through it once).

        A new PostgreSQL session's first read of the tables costs milliseconds
        on the server; a process that knows it is about to command can pay that
        while it does something else. Off PostgreSQL nothing is read: a read
        there would begin a transaction.
        """
        with translated_errors(self.engine):
            conn, _ = self._held.take()
            try:
                if self.is_postgres:
                    self._run(conn, self._driver().load, ("",)).fetchall()
            except BaseException as exc:
                self._abort(conn, exc)
                raise
            self._held.give_back(conn)

    def command_statements(self) -> dict[str, DriverStatement]:
        """The statements a command sends, by name (benchmarks run the same SQL raw)."""
        self.prepare()
        sql = self._driver()
        return {
            field.name: getattr(sql, field.name)
            for field in dataclasses.fields(sql)
            if isinstance(getattr(sql, field.name), DriverStatement)
        }

    def _driver(self) -> _DriverStatements:
        if self._driver_sql is None:
            self._driver_sql = _driver_statements(self._sql, self.engine.dialect)
        return self._driver_sql

    def _execute(self, conn: PoolProxiedConnection, sql: str, parameters: Any) -> Any:
        """Run ``sql`` on ``conn``'s driver; driver errors come out as SQLAlchemy's."""
        cursor = _cursor(conn)
        try:
            cursor.execute(sql, parameters)
        except self._held.driver_errors as exc:
            raise self._held.driver_error(exc, sql, conn) from exc
        return cursor

    def _call(self, conn: PoolProxiedConnection, what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except self._held.driver_errors as exc:
            raise self._held.driver_error(exc, what, conn) from exc

    def _run(
        self, conn: PoolProxiedConnection, statement: DriverStatement, values: tuple[Any, ...]
    ) -> Any:
        return self._execute(conn, statement.sql, statement.parameters(values))

    def _load(self, conn: PoolProxiedConnection, job_id: str) -> tuple[JobStatus | None, datetime]:
        load = self._driver().load
        (row,) = self._run(conn, load, (job_id,)).fetchall()
        now, *columns = load.read(row)
        self._clock_offset = now.timestamp() - time.time()
        status = JobStatus(*columns) if columns[0] is not None else None
        return status, now

    @property
    def appends_unread(self) -> bool:
        """Whether :meth:`append_unread` can be tried: PostgreSQL, after a first read."""
        return self._clock_offset is not None and self.is_postgres

    def estimated_now(self) -> datetime:
        """The database clock as this process reckons it (see :meth:`append_unread`)."""
        assert self._clock_offset is not None
        return datetime.fromtimestamp(time.time() + self._clock_offset, _UTC)

    def append_unread(self, expected: int, event: Event, status: JobStatus) -> int | None:
        """Append without reading first; the event's position, or ``None`` if refused.

        Refused, with nothing written, unless the job is still at version
        ``expected`` and ``event.recorded_at`` is within :data:`CLOCK_TOLERANCE`
        of the database clock; also when the held connection turned out dead (the
        caller's ordinary command then reconnects).
        """
        statement = self._driver().pg_append_unread
        assert statement is not None
        values = _write_values(expected, status, event)
        conn, was_held = self._held.take()
        try:
            position = _first_value(self._run(conn, statement, values))
        except sa_exc.IntegrityError as exc:
            self._abort(conn, exc)
            return None
        except BaseException as exc:
            self._abort(conn, exc)
            if isinstance(exc, sa_exc.DBAPIError):
                if was_held and exc.connection_invalidated:
                    return None
                raise_translated(exc, self.engine)
            raise
        self._held.give_back(conn)
        return position

    def _append(
        self, conn: PoolProxiedConnection, expected: int, event: Event, status: JobStatus
    ) -> int | None:
        sql = self._driver()
        values = _write_values(expected, status, event)
        try:
            if sql.pg_append is not None:
                return _first_value(self._run(conn, sql.pg_append, values))
            assert sql.guarded_update is not None
            assert sql.insert_event is not None
            if self._run(conn, sql.guarded_update, values).rowcount != 1:
                return None
            return _first_value(self._run(conn, sql.insert_event, event_row(event)))
        except sa_exc.IntegrityError:
            return None  # UNIQUE(job_id, version): the guard's backstop

    def _create(self, conn: PoolProxiedConnection, event: Event, status: JobStatus) -> int | None:
        sql = self._driver()
        try:
            if sql.pg_create is not None:
                values = _write_values(0, status, event)  # nothing to expect: a new row
                return _first_value(self._run(conn, sql.pg_create, values))
            assert sql.insert_status is not None
            assert sql.insert_event is not None
            self._run(conn, sql.insert_status, status_row(status))
            return _first_value(self._run(conn, sql.insert_event, event_row(event)))
        except sa_exc.IntegrityError:
            return None

    def create_many(
        self, jobs_and_events: Callable[[datetime], Sequence[tuple[Event, JobStatus]]]
    ) -> list[str]:
        """Store many new jobs in one transaction.

        ``jobs_and_events`` is called with the transaction's database time and
        returns the rows to insert. Returns the ids that already existed (and
        then nothing was written), or an empty list.
        """
        if self._copies_batches:
            return self._copy_many(jobs_and_events)
        with translated_errors(self.engine), self._batch_engine.connect() as conn:
            try:
                with conn.begin():
                    pairs = jobs_and_events(self._now(conn))
                    conn.execute(self._sql.insert_status, [status_values(s) for _, s in pairs])
                    conn.execute(self._sql.insert_events_many, [event_values(e) for e, _ in pairs])
            except sa_exc.IntegrityError as exc:
                return self._existing_or_raise(pairs, exc)
        return []

    def _copy_many(
        self, jobs_and_events: Callable[[datetime], Sequence[tuple[Event, JobStatus]]]
    ) -> list[str]:
        """:meth:`create_many` on PostgreSQL with psycopg: COPY, one stream per table.

        ``executemany`` spent more CPU per row than building the row did; COPY
        takes the rows as they are. They carry exactly what the INSERTs would:
        the values pass through the same column processors, and ``tx_id`` is
        the transaction's own ``pg_current_xact_id()``, read with ``now()`` at
        its start. A duplicate id fails the COPY, and the whole batch rolls back.
        """
        sql = self._driver()
        assert sql.batch_clock is not None
        assert sql.jobs_rows is not None
        assert sql.events_rows is not None
        pairs: Sequence[tuple[Event, JobStatus]] = ()
        with translated_errors(self.engine):
            conn, _ = self._held.take()
            try:
                jobs_copy, events_copy = sql.jobs_copy, sql.events_copy
                with (
                    self._driver_call(conn, f"{jobs_copy}; {events_copy}"),
                    conn.dbapi_connection.transaction(),  # type: ignore[union-attr]
                ):
                    (row,) = self._run(conn, sql.batch_clock, ()).fetchall()
                    now, tx_id = sql.batch_clock.read(row)
                    pairs = jobs_and_events(now)
                    cursor = _cursor(conn)
                    with cursor.copy(jobs_copy) as copy:
                        for _, status in pairs:
                            copy.write_row(sql.jobs_rows.row(status_row(status)))
                    with cursor.copy(events_copy) as copy:
                        for event, _ in pairs:
                            copy.write_row([*sql.events_rows.row(event_row(event)), tx_id])
            except sa_exc.IntegrityError as exc:
                self._abort(conn, exc)
                return self._existing_or_raise(pairs, exc)
            except BaseException as exc:
                self._abort(conn, exc)
                raise
            self._held.give_back(conn)
        return []

    @contextlib.contextmanager
    def _driver_call(self, conn: PoolProxiedConnection, what: str) -> Iterator[None]:
        """Driver errors inside come out as SQLAlchemy's (see :meth:`_execute`)."""
        try:
            yield
        except sa_exc.DBAPIError:
            raise  # already wrapped by _execute
        except self._held.driver_errors as exc:
            raise self._held.driver_error(exc, what, conn) from exc

    def _now(self, conn: Connection) -> datetime:
        moment: datetime = conn.execute(self._sql.clock).scalar_one()
        return moment

    def _existing_or_raise(
        self, pairs: Sequence[tuple[Event, JobStatus]], error: sa_exc.IntegrityError
    ) -> list[str]:
        """After a batch broke a constraint: the ids that exist, or ``error`` if none does
        (a batch refused by another constraint must not count as written).
        """
        existing = self.existing([e.job_id for e, _ in pairs])
        if not existing:
            raise error
        return existing

    def existing(self, job_ids: Sequence[str]) -> list[str]:
        query = select(jobs.c.job_id).where(jobs.c.job_id.in_(job_ids))
        with translated_errors(self.engine), self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def first_payloads(self, job_ids: Sequence[str]) -> dict[str, Any]:
        """The data of the first (``enqueued``) event of each of ``job_ids`` that exists."""
        query = select(events.c.job_id, events.c.data).where(
            events.c.job_id.in_(job_ids), events.c.version == 1
        )
        with translated_errors(self.engine), self.engine.connect() as conn:
            return {row.job_id: row.data for row in conn.execute(query)}

    def status(self, job_id: str) -> JobStatus | None:
        query = select(jobs).where(jobs.c.job_id == job_id)
        with translated_errors(self.engine), self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return status_from_row(row) if row is not None else None

    def history(self, job_id: str) -> list[Event]:
        query = select(events).where(events.c.job_id == job_id).order_by(events.c.version)
        with translated_errors(self.engine), self.engine.connect() as conn:
            return [event_from_row(row) for row in conn.execute(query)]

    def statuses(
        self,
        state: str | None = None,
        queue: str | None = None,
        claimed_by: str | None = None,
        batch_size: int = 1000,
    ) -> Iterator[JobStatus]:
        """Projection rows matching the filters, in job-id order, fetched in pages."""
        query = select(jobs).order_by(jobs.c.job_id).limit(batch_size)
        for column, value in (("state", state), ("queue", queue), ("claimed_by", claimed_by)):
            if value is not None:
                query = query.where(jobs.c[column] == value)
        after: str | None = None
        while True:
            page = query if after is None else query.where(jobs.c.job_id > after)
            with translated_errors(self.engine), self.engine.connect() as conn:
                rows = conn.execute(page).all()
            yield from (status_from_row(row) for row in rows)
            if len(rows) < batch_size:
                return
            after = rows[-1].job_id
