"""Commands: appending events, the write path of every ledger command.

An append never holds a transaction open across application code. The job's
row is read (with the database clock), the ledger decides in Python, and the
write is guarded by the version that was read: the projection row is updated
``WHERE version = expected`` and the event is inserted only if that update
matched. A writer that lost a race therefore writes nothing at all and is told
so (``None``), and ``UNIQUE(job_id, version)`` backs the guard up.

How the write is sent is the backend's (:mod:`jobledger.storage`): on PostgreSQL
one statement in autocommit mode, so a command costs two round trips (read,
write); elsewhere two statements in a short transaction, ``BEGIN IMMEDIATE`` on
SQLite.

A writer that knows the job's row (a holder, the row it wrote last; a worker, the
row its job system's message carried) skips the read (:meth:`Store.write_unread`;
PostgreSQL and SQLite): its write is guarded by that row (a holder's by its version
and last hash, a handed-over row by every column), and its timestamp, taken from
this process's clock corrected by the offset the last read measured, must lie
within :data:`CLOCK_TOLERANCE` of the database clock as the write runs. A refused
write writes nothing; the caller then reads and decides as usual.

Commands skip SQLAlchemy's per-execution machinery (why: ``benchmarks/README.md``):
their statements are compiled once (:class:`~jobledger.storage.driver.DriverStatement`)
and run straight on a DBAPI connection that the store keeps checked out between
commands (:class:`~jobledger.database.HeldConnections`). One consequence: engine
events and ``echo`` logging do not see command statements. Batches and reads go
through SQLAlchemy as usual.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import PoolProxiedConnection

from .database import HeldConnections, raise_translated, translated_errors
from .decisions import Step
from .records import Event, JobStatus
from .storage.backend import (
    CLOCK_TOLERANCE,
    BulkCopy,
    CommandStatements,
    run_steps,
    unread_write,
)
from .storage.driver import DriverStatement, command_cursor
from .storage.reads import Reads
from .storage.rows import event_values, status_values, write_values

__all__ = ["CLOCK_TOLERANCE", "Command", "DriverStatement", "LostRace", "Store"]

_UTC = timezone.utc


class LostRace(Exception):
    """Another writer appended to the job first; nothing was written. Internal: retried."""


class Command:
    """One read-decide-write cycle on one job: ``with store.command(job_id) as command``.

    Entering loads the job (see :meth:`Store.command`); leaving commits or rolls
    back and turns driver errors into jobledger's, as :func:`translated_errors`
    does. A class, not a ``contextlib`` generator (why: ``benchmarks/README.md``).
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

        Each step is guarded by the version the previous one wrote. Where a single
        append commits by itself (autocommit commands), the steps share one explicit
        transaction: a crash between two of them must not leave half a decision
        (an ``abandoned`` without the ``requeued`` that the policy asked for).
        """
        if len(steps) == 1:
            self.write(*steps[0])
            return
        store, expected = self._store, self.status
        if store.autocommit:
            store._execute(self._conn, "BEGIN", ())
        for event, status in steps:
            if expected is None:
                position = store._create(self._conn, event, status)
            else:
                position = store._append(self._conn, expected.version, event, status)
            if position is None:
                raise LostRace(event.job_id)
            expected = status
        if store.autocommit:
            store._execute(self._conn, "COMMIT", ())


class Store(Reads):
    """Guarded writes of events and projection rows for one Engine (and its reads)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        #: Commands run on autocommit connections, each write committing by itself.
        self.autocommit = self.backend.autocommit_commands
        self._batch = self.backend.batch_statements()
        # Batches through SQLAlchemy take the write lock up front where the backend can.
        self._batch_engine = engine.execution_options(jobledger_write=True)
        self._held = HeldConnections(engine, autocommit=self.autocommit)
        self._copies_batches = self.backend.copies_batches(engine.dialect)
        # Compiled on the first command: the dialect knows the server only once connected.
        self._commands: CommandStatements | None = None
        #: Database clock minus this process's, in seconds, as the last read saw it.
        self._clock_offset: float | None = None

    def close(self) -> None:
        """Return the connections held for commands to the pool."""
        self._held.close()

    def command(self, job_id: str) -> Command:
        """Load ``job_id`` and the database clock, for the caller to decide and write.

        With autocommit commands (PostgreSQL) the read and the (single-statement)
        write each commit by themselves; the write's version guard makes the gap
        between them safe. Elsewhere the whole cycle is one transaction, so a
        refusal raised by the caller rolls back everything.
        """
        return Command(self, job_id)

    def _finish(self, conn: PoolProxiedConnection, exc: BaseException | None) -> None:
        """End a command: commit (if not autocommit), keep ``conn``; or roll back after ``exc``."""
        if exc is None:
            try:
                if not self.autocommit:
                    self._call(conn, "COMMIT", conn.commit)
            except BaseException as error:
                self._abort(conn, error)
                raise
            self._held.give_back(conn)
        else:
            self._abort(conn, exc)

    def _start(self, job_id: str) -> tuple[PoolProxiedConnection, JobStatus | None, datetime]:
        """A connection with ``job_id`` loaded (and the backend's transaction begun).

        A held connection may have died since its last command (a database
        restart): nothing was written yet, so the load is retried once on a fresh
        connection, which the pool pre-pings. This is what keeps a worker going
        across database restarts.
        """
        begin = self.backend.begin_command
        while True:
            conn, was_held = self._held.take()
            try:
                if begin is not None:
                    self._execute(conn, begin, ())
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
        self._statements()

    def warm_up(self) -> None:
        """Open a connection for commands now (and, with autocommit, read through it once).

        A new PostgreSQL session's first read of the tables costs milliseconds
        on the server; a process that knows it is about to command can pay that
        while it does something else. Without autocommit nothing is read: a read
        there would begin a transaction.
        """
        with translated_errors(self.engine):
            conn, _ = self._held.take()
            try:
                if self.autocommit:
                    self._load(conn, "")  # measures the clock offset too
            except BaseException as exc:
                self._abort(conn, exc)
                raise
            self._held.give_back(conn)

    def command_statements(self) -> dict[str, DriverStatement]:
        """The statements a command sends, by name (benchmarks run the same SQL raw)."""
        self.prepare()
        statements = self._statements()
        return {**statements.by_name(), **statements.unread_by_name()}

    def _statements(self) -> CommandStatements:
        if self._commands is None:
            self._commands = self.backend.commands(self.engine.dialect)
        return self._commands

    def _execute(self, conn: PoolProxiedConnection, sql: str, parameters: Any) -> Any:
        """Run ``sql`` on ``conn``'s driver; driver errors come out as SQLAlchemy's."""
        cursor = command_cursor(conn)
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
        load = self._statements().load
        (row,) = self._run(conn, load, (job_id,)).fetchall()
        now, *columns = load.read(row)
        self._clock_offset = now.timestamp() - time.time()
        status = JobStatus(*columns) if columns[0] is not None else None
        return status, now

    @property
    def appends_unread(self) -> bool:
        """Whether :meth:`write_unread` can be tried: the backend has it, and a read has
        measured the clock offset."""
        return self._clock_offset is not None and self._statements().unread is not None

    def estimated_now(self) -> datetime:
        """The database clock as this process reckons it (see :meth:`write_unread`)."""
        assert self._clock_offset is not None
        return datetime.fromtimestamp(time.time() + self._clock_offset, _UTC)

    def write_unread(
        self, known: JobStatus | None, decide: Callable[[datetime], Step | None], held: bool
    ) -> tuple[Step | None, bool]:
        """Write without reading first: the step ``decide(now)`` gave, and whether it was
        written (``False``: refused or not tried, nothing written; the caller then reads
        and decides as usual).

        ``now`` is this process's clock corrected by the offset the last read measured,
        taken once a connection is in hand (before SQLite's write lock: a decision to
        write nothing takes no lock; a write that waited longer than the tolerance for
        another process's lock is refused and costs a read). The write is refused unless
        ``now`` lies within :data:`CLOCK_TOLERANCE` of the database clock as it runs, and
        the job's row is still ``known`` (``None``: the job does not exist; ``held``: a
        row this process wrote, checked by version and last hash; otherwise every
        column). Also refused when the held connection turned out dead (the caller's
        ordinary command then reconnects).
        """
        writes = self._statements().unread
        assert writes is not None
        conn, was_held = self._held.take()
        step: Step | None = None
        written = False
        try:
            step = decide(self.estimated_now())
            if step is not None:  # nothing to write (a throttled heartbeat): no transaction
                if self.backend.begin_command is not None:
                    self._execute(conn, self.backend.begin_command, ())
                steps, values = unread_write(writes, known, held, *step)
                written = run_steps(steps, self._run, conn, values) is not None
                if not self.autocommit:
                    if written:
                        self._call(conn, "COMMIT", conn.commit)
                    else:
                        self._call(conn, "ROLLBACK", conn.rollback)
        except sa_exc.IntegrityError as exc:  # UNIQUE(job_id, version), a new job's id
            self._abort(conn, exc)
            return step, False
        except BaseException as exc:
            self._abort(conn, exc)
            if isinstance(exc, sa_exc.DBAPIError):
                if was_held and exc.connection_invalidated:
                    return step, False
                raise_translated(exc, self.engine)
            raise
        self._held.give_back(conn)
        return step, written

    def _append(
        self, conn: PoolProxiedConnection, expected: int, event: Event, status: JobStatus
    ) -> int | None:
        try:
            return self._statements().append(self._run, conn, write_values(expected, status, event))
        except sa_exc.IntegrityError:
            return None  # UNIQUE(job_id, version): the guard's backstop

    def _create(self, conn: PoolProxiedConnection, event: Event, status: JobStatus) -> int | None:
        try:  # nothing to expect: a new row
            return self._statements().create(self._run, conn, write_values(0, status, event))
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
        batch = self._batch
        with translated_errors(self.engine), self._batch_engine.connect() as conn:
            try:
                with conn.begin():
                    pairs = jobs_and_events(conn.execute(batch.clock).scalar_one())
                    conn.execute(batch.insert_status, [status_values(s) for _, s in pairs])
                    conn.execute(batch.insert_events, [event_values(e) for e, _ in pairs])
            except sa_exc.IntegrityError as exc:
                return self._existing_or_raise(pairs, exc)
        return []

    def _copy_many(
        self, jobs_and_events: Callable[[datetime], Sequence[tuple[Event, JobStatus]]]
    ) -> list[str]:
        """:meth:`create_many` by COPY (the backend's bulk path); the whole batch rolls back
        if any row fails."""
        sql = self._statements()
        assert isinstance(sql, BulkCopy)
        pairs: Sequence[tuple[Event, JobStatus]] = ()
        with translated_errors(self.engine):
            conn, _ = self._held.take()
            try:
                with (
                    self._driver_call(conn, sql.copy_description),
                    conn.dbapi_connection.transaction(),  # type: ignore[union-attr]
                ):
                    now, tx_id = sql.batch_start(self._run, conn)
                    pairs = jobs_and_events(now)
                    sql.copy(conn, pairs, tx_id)
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
