"""The async write path and reads: :mod:`jobledger.store`'s invariant, on async drivers.

Same statements, same guard: the job's row is read with the database clock,
the caller decides (with :mod:`jobledger.decisions`, as the sync Ledger does),
and the write is guarded by the version that was read: the projection row is
updated ``WHERE version = expected`` and the event inserted only if that
matched, so a writer that lost the race wrote nothing and is told so
(``LostRace``). The statements are the backend's own
(:class:`~jobledger.storage.backend.CommandStatements` and its
:class:`~jobledger.storage.backend.WriteStep` lists): on PostgreSQL one
statement in autocommit, on SQLite two inside ``BEGIN IMMEDIATE``.

A command never holds a connection across an ``await`` of the caller's: the
read, the decision and the write happen inside :meth:`AsyncStore.command`'s
block, and the decision is plain Python. A command cancelled part-way (see
:mod:`jobledger.aio.connections`) closes its connection: on PostgreSQL the
single-statement write happened or did not, on SQLite the open transaction is
rolled back by the close.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn

from sqlalchemy import bindparam, select
from sqlalchemy import exc as sa_exc

from ..database import raise_translated
from ..decisions import Step
from ..records import Event, JobStatus
from ..schema import EVENT_FIELDS, STATUS_FIELDS, events, jobs
from ..storage import backend_for
from ..storage.backend import BulkCopy, CommandStatements, WriteStep, unread_write
from ..storage.driver import DriverStatement
from ..storage.rows import event_row, status_row, write_values
from ..store import LostRace
from .connections import DEFAULT_POOL_SIZE, Connections, Driver, Result

_UTC = timezone.utc


class AsyncCommand:
    """One read-decide-write cycle on one job: ``async with store.command(job_id) as command``."""

    status: JobStatus | None
    now: datetime

    def __init__(self, store: AsyncStore, job_id: str) -> None:
        self._store, self._job_id = store, job_id

    async def __aenter__(self) -> AsyncCommand:
        self._lock = self._store.write_lock()
        if self._lock is not None:
            await self._lock.acquire()
        try:
            self._conn, self.status, self.now = await self._store._start(self._job_id)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        return self

    async def __aexit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        try:
            await self._store._finish(self._conn, exc)
        finally:
            if self._lock is not None:
                self._lock.release()
        if isinstance(exc, sa_exc.DBAPIError):
            self._store.raise_translated(exc)

    async def write(self, event: Event, status: JobStatus) -> int:
        """Store ``event`` and the job's new ``status``; its position. ``LostRace`` if beaten."""
        expected = self.status.version if self.status is not None else None
        position = await self._store._write(self._conn, expected, event, status)
        if position is None:
            raise LostRace(event.job_id)
        return position

    async def write_all(self, steps: Sequence[tuple[Event, JobStatus]]) -> None:
        """Consecutive events of the job, all or nothing (see ``store.Command.write_all``)."""
        if len(steps) == 1:
            await self.write(*steps[0])
            return
        store, expected = self._store, self.status
        if store.autocommit:
            await store._execute(self._conn, "BEGIN", ())
        for event, status in steps:
            version = expected.version if expected is not None else None
            if await store._write(self._conn, version, event, status) is None:
                raise LostRace(event.job_id)
            expected = status
        if store.autocommit:
            await store._execute(self._conn, "COMMIT", ())


class AsyncStore:
    """Guarded writes and plain reads of one ledger database, on an async driver."""

    def __init__(self, driver: Driver, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.driver = driver
        self.engine = driver.engine  # never connected: its dialect and URL only
        self.backend = backend_for(self.engine)
        self.autocommit = self.backend.autocommit_commands
        self.connections = Connections(driver, pool_size)
        dialect = self.engine.dialect
        self._commands: CommandStatements = self.backend.commands(dialect)
        batch = self.backend.batch_statements()
        self._copies = isinstance(self._commands, BulkCopy) and self.backend.copies_batches(dialect)
        self._batch_clock = DriverStatement(batch.clock, dialect)
        self._batch_jobs = DriverStatement(
            batch.insert_status, dialect, STATUS_FIELDS, STATUS_FIELDS
        )
        self._batch_events = DriverStatement(
            batch.insert_events, dialect, EVENT_FIELDS, EVENT_FIELDS
        )
        self._status = DriverStatement(
            select(jobs).where(jobs.c.job_id == bindparam("job_id")), dialect, ("job_id",)
        )
        self._history = DriverStatement(
            select(events.c.position, *(events.c[name] for name in EVENT_FIELDS))
            .where(events.c.job_id == bindparam("job_id"))
            .order_by(events.c.version),
            dialect,
            ("job_id",),
        )
        #: Database clock minus this process's, in seconds, as the last read saw it.
        self._clock_offset: float | None = None
        self._write_lock: asyncio.Lock | None = None

    def write_lock(self) -> asyncio.Lock | None:
        """The lock this process's writers take in turn where the database has one write lock
        (SQLite): they wait on the loop, in order, instead of in SQLite's busy handler,
        which sleeps and retries (at 50 concurrent commands, 4x slower than taking turns)."""
        if not self.backend.one_write_lock:
            return None
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    async def close(self) -> None:
        await self.connections.close()

    def command(self, job_id: str) -> AsyncCommand:
        """Load ``job_id`` and the database clock, for the caller to decide and write."""
        return AsyncCommand(self, job_id)

    def raise_translated(self, exc: sa_exc.DBAPIError) -> NoReturn:
        """Raise the jobledger error for ``exc`` (see :func:`jobledger.database.translate`)."""
        raise_translated(exc, self.engine)

    # -- the command cycle ----------------------------------------------------------------

    async def _start(self, job_id: str) -> tuple[Any, JobStatus | None, datetime]:
        """A connection with ``job_id`` loaded (and the backend's transaction begun).

        A held connection that died since its last command (a database restart) is
        replaced once, as the sync store does: nothing was written yet.
        """
        begin = self.backend.begin_command
        while True:
            conn, was_held = await self.connections.take()
            try:
                if begin is not None:
                    await self._execute(conn, begin, ())
                status, now = await self._load(conn, job_id)
                return conn, status, now
            except BaseException as exc:
                await self._abort(conn, exc)
                retry = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
                if not (was_held and retry):
                    if isinstance(exc, sa_exc.DBAPIError):
                        self.raise_translated(exc)
                    raise

    async def _finish(self, conn: Any, exc: BaseException | None) -> None:
        """Commit (if not autocommit) and keep ``conn``; or roll back after ``exc``."""
        if exc is None:
            try:
                if not self.autocommit:
                    await self._execute(conn, "COMMIT", ())
            except BaseException as error:
                await self._abort(conn, error)
                if isinstance(error, sa_exc.DBAPIError):
                    self.raise_translated(error)
                raise
            self.connections.give_back(conn)
        else:
            await self._abort(conn, exc)

    async def _abort(self, conn: Any, exc: BaseException) -> None:
        """Roll back after ``exc`` and keep ``conn`` if it is still known to be sound."""
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            await self.connections.discard(conn, broken=True)
        elif not isinstance(exc, Exception):  # cancelled inside the driver: state unknown
            await self.connections.discard(conn)
        else:
            try:
                await self.driver.rollback(conn)
            except BaseException as error:
                await self.connections.discard(conn)
                if not isinstance(error, Exception):  # cancelled while rolling back
                    raise
                return
            self.connections.give_back(conn)

    async def _execute(self, conn: Any, sql: str, parameters: Any) -> Result:
        """Run ``sql``; driver errors come out as SQLAlchemy's (as ``Store._execute``)."""
        try:
            return await self.driver.execute(conn, sql, parameters)
        except self.driver.errors as exc:
            raise self.driver.wrapped(exc, sql, conn) from exc

    async def _run(self, conn: Any, statement: DriverStatement, values: tuple[Any, ...]) -> Result:
        return await self._execute(conn, statement.sql, statement.parameters(values))

    async def _load(self, conn: Any, job_id: str) -> tuple[JobStatus | None, datetime]:
        load = self._commands.load
        (row,) = (await self._run(conn, load, (job_id,))).rows
        now, *columns = load.read(row)
        self._clock_offset = now.timestamp() - time.time()
        status = JobStatus(*columns) if columns[0] is not None else None
        return status, now

    async def _write(
        self, conn: Any, expected: int | None, event: Event, status: JobStatus
    ) -> int | None:
        """The backend's write steps (append, or create when ``expected`` is ``None``)."""
        commands = self._commands
        steps = commands.create_steps if expected is None else commands.append_steps
        try:
            return await self._steps(conn, steps, write_values(expected or 0, status, event))
        except sa_exc.IntegrityError:
            return None  # UNIQUE(job_id, version) or the primary key: the guard's backstop

    async def _steps(
        self, conn: Any, steps: Sequence[WriteStep], values: tuple[Any, ...]
    ) -> int | None:
        """:func:`jobledger.storage.backend.run_steps`, awaited."""
        result: Result | None = None
        for step in steps:
            result = await self._run(conn, step.statement, values)
            if step.guard and result.rowcount != 1:
                return None
        assert result is not None
        if not steps[-1].statement.returns_rows:
            return result.lastrowid
        return int(result.rows[0][0]) if result.rows else None

    # -- writes without a read: a holder, a claim from a handed-over row, an enqueue --------

    @property
    def appends_unread(self) -> bool:
        """Whether :meth:`write_unread` can be tried: the backend has it, after a first read."""
        return self._clock_offset is not None and self._commands.unread is not None

    def estimated_now(self) -> datetime:
        """The database clock as this process reckons it (see ``Store.write_unread``)."""
        assert self._clock_offset is not None
        return datetime.fromtimestamp(time.time() + self._clock_offset, _UTC)

    async def write_unread(
        self, known: JobStatus | None, decide: Callable[[datetime], Step | None], held: bool
    ) -> tuple[Step | None, bool]:
        """Write without reading first, guarded by ``known`` (``None``: a new job; ``held``:
        by its version and last hash, else by every column) and the database clock, as the
        sync ``Store.write_unread``: the step ``decide(now)`` gave, and whether it was
        written (``False``: refused, nothing written; the caller then reads and decides).

        ``now`` is reckoned once a connection (and, on SQLite, this process's turn on the
        write lock) is in hand: a command that waited behind many others would otherwise
        stamp a time the clock guard refuses.
        """
        lock = self.write_lock()
        if lock is None:
            return await self._write_unread(known, decide, held)
        async with lock:
            return await self._write_unread(known, decide, held)

    async def _write_unread(
        self, known: JobStatus | None, decide: Callable[[datetime], Step | None], held: bool
    ) -> tuple[Step | None, bool]:
        writes = self._commands.unread
        assert writes is not None
        conn, was_held = await self.connections.take()
        step: Step | None = None
        written = False
        try:
            step = decide(self.estimated_now())
            if step is not None:  # nothing to write (a throttled heartbeat): no transaction
                if self.backend.begin_command is not None:
                    await self._execute(conn, self.backend.begin_command, ())
                steps, values = unread_write(writes, known, held, *step)
                written = await self._steps(conn, steps, values) is not None
                if not self.autocommit:
                    await self._execute(conn, "COMMIT" if written else "ROLLBACK", ())
        except BaseException as exc:
            await self._abort(conn, exc)
            if isinstance(exc, sa_exc.IntegrityError):  # UNIQUE(job_id, version), a new id
                return step, False
            if isinstance(exc, sa_exc.DBAPIError):
                if was_held and exc.connection_invalidated:
                    return step, False
                self.raise_translated(exc)
            raise
        self.connections.give_back(conn)
        return step, written

    # -- batches ----------------------------------------------------------------------------

    async def create_many(
        self, jobs_and_events: Callable[[datetime], Sequence[tuple[Event, JobStatus]]]
    ) -> list[str]:
        """Store many new jobs in one transaction; the ids that already existed (then nothing
        was written), or an empty list. As ``Store.create_many``."""
        lock = self.write_lock()
        if lock is None:
            return await self._create_many(jobs_and_events)
        async with lock:
            return await self._create_many(jobs_and_events)

    async def _create_many(
        self, jobs_and_events: Callable[[datetime], Sequence[tuple[Event, JobStatus]]]
    ) -> list[str]:
        pairs: Sequence[tuple[Event, JobStatus]] = ()
        conn, _ = await self.connections.take()
        try:
            await self._execute(conn, self.backend.begin_command or "BEGIN", ())
            if self._copies:
                clock: DriverStatement = self._commands.batch_clock  # type: ignore[attr-defined]
                (row,) = (await self._run(conn, clock, ())).rows
                now, tx_id = clock.read(row)
                pairs = jobs_and_events(now)
                await self._copy(conn, pairs, tx_id)
            else:
                (row,) = (await self._run(conn, self._batch_clock, ())).rows
                (now,) = self._batch_clock.read(row)
                pairs = jobs_and_events(now)
                await self._insert_many(conn, pairs)
            await self._execute(conn, "COMMIT", ())
        except sa_exc.IntegrityError as exc:
            await self._abort(conn, exc)
            return await self._existing_or_raise(pairs, exc)
        except BaseException as exc:
            await self._abort(conn, exc)
            if isinstance(exc, sa_exc.DBAPIError):
                self.raise_translated(exc)
            raise
        self.connections.give_back(conn)
        return []

    async def _copy(self, conn: Any, pairs: Sequence[tuple[Event, JobStatus]], tx_id: Any) -> None:
        commands: Any = self._commands
        try:
            async with conn.cursor() as cursor:
                for sql, rows in commands.copy_streams(pairs, tx_id):
                    async with cursor.copy(sql) as copy:
                        for row in rows:
                            await copy.write_row(row)
        except self.driver.errors as exc:
            raise self.driver.wrapped(exc, commands.copy_description, conn) from exc

    async def _insert_many(self, conn: Any, pairs: Sequence[tuple[Event, JobStatus]]) -> None:
        for statement, rows in (
            (self._batch_jobs, [status_row(status) for _, status in pairs]),
            (self._batch_events, [event_row(event) for event, _ in pairs]),
        ):
            try:
                await self.driver.executemany(
                    conn, statement.sql, [statement.parameters(row) for row in rows]
                )
            except self.driver.errors as exc:
                raise self.driver.wrapped(exc, statement.sql, conn) from exc

    async def _existing_or_raise(
        self, pairs: Sequence[tuple[Event, JobStatus]], error: sa_exc.IntegrityError
    ) -> list[str]:
        existing = await self.existing([event.job_id for event, _ in pairs])
        if not existing:
            self.raise_translated(error)
        return existing

    # -- reads --------------------------------------------------------------------------------

    async def _read(self, statement: DriverStatement, values: tuple[Any, ...]) -> list[Any]:
        """Rows of ``statement``; a held connection found dead is replaced once (as ``_start``)."""
        while True:
            conn, was_held = await self.connections.take()
            try:
                result = await self._run(conn, statement, values)
            except BaseException as exc:
                await self._abort(conn, exc)
                if isinstance(exc, sa_exc.DBAPIError):
                    if was_held and exc.connection_invalidated:
                        continue
                    self.raise_translated(exc)
                raise
            self.connections.give_back(conn)
            return [statement.read(row) for row in result.rows]

    async def status(self, job_id: str) -> JobStatus | None:
        rows = await self._read(self._status, (job_id,))
        return JobStatus(*rows[0]) if rows else None

    async def history(self, job_id: str) -> list[Event]:
        return [Event(*row) for row in await self._read(self._history, (job_id,))]

    async def statuses(
        self,
        state: str | None = None,
        queue: str | None = None,
        claimed_by: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[JobStatus]:
        """Projection rows matching the filters, in job-id order, fetched in pages."""
        filters = tuple(
            (name, value)
            for name, value in (("state", state), ("queue", queue), ("claimed_by", claimed_by))
            if value is not None
        )
        names = tuple(name for name, _ in filters)
        values = tuple(value for _, value in filters)
        after: str | None = None
        while True:
            statement = self._page(names, after is not None)
            page = values + (batch_size,) + ((after,) if after is not None else ())
            rows = await self._read(statement, page)
            for row in rows:
                yield JobStatus(*row)
            if len(rows) < batch_size:
                return
            after = rows[-1][0]

    @functools.cache  # noqa: B019 (a handful of filter shapes per store, kept with it)
    def _page(self, filters: tuple[str, ...], after: bool) -> DriverStatement:
        query = select(jobs).order_by(jobs.c.job_id).limit(bindparam("limit"))
        for name in filters:
            query = query.where(jobs.c[name] == bindparam(name))
        source = (*filters, "limit")
        if after:
            query = query.where(jobs.c.job_id > bindparam("after"))
            source += ("after",)
        return DriverStatement(query, self.engine.dialect, source)

    async def existing(self, job_ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(job_ids), _IN_LIST):
            chunk = tuple(job_ids[start : start + _IN_LIST])
            found += [row[0] for row in await self._read(self._existing(len(chunk)), chunk)]
        return sorted(found)

    async def first_payloads(self, job_ids: Sequence[str]) -> dict[str, Any]:
        """The data of the first (``enqueued``) event of each of ``job_ids`` that exists."""
        found: dict[str, Any] = {}
        for start in range(0, len(job_ids), _IN_LIST):
            chunk = tuple(job_ids[start : start + _IN_LIST])
            rows = await self._read(self._first_payloads(len(chunk)), chunk)
            found.update(dict(rows))
        return found

    @functools.cache  # noqa: B019
    def _existing(self, count: int) -> DriverStatement:
        ids: list[Any] = [bindparam(f"id{i}") for i in range(count)]
        query = select(jobs.c.job_id).where(jobs.c.job_id.in_(ids))
        return DriverStatement(query, self.engine.dialect, [f"id{i}" for i in range(count)])

    @functools.cache  # noqa: B019
    def _first_payloads(self, count: int) -> DriverStatement:
        ids: list[Any] = [bindparam(f"id{i}") for i in range(count)]
        query = select(events.c.job_id, events.c.data).where(
            events.c.job_id.in_(ids), events.c.version == 1
        )
        return DriverStatement(query, self.engine.dialect, [f"id{i}" for i in range(count)])


#: Ids per ``IN (...)`` list of a batch's look-ups (SQLite allows 32766 bound values).
_IN_LIST = 5000
