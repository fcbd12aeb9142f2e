"""Async driver connections for commands: psycopg's AsyncConnection or aiosqlite.

The async store sends the very statements the sync one does (compiled once by
:mod:`jobledger.storage` for the database's dialect) straight to an async
driver: psycopg's ``AsyncConnection`` on PostgreSQL, ``aiosqlite`` on SQLite.
The dialect of a sync Engine that is never connected here supplies what the
driver needs: how the URL becomes connect arguments, and how a driver error
becomes SQLAlchemy's and then jobledger's (:func:`jobledger.database.translate`).

Cancellation: a command cancelled inside the driver (``CancelledError``,
``asyncio.timeout``) leaves its connection in a state nobody knows, so the
connection is closed, never reused, and the close runs shielded from a second
cancellation. Closing ends the session, and the server rolls back whatever
transaction it had open: no half-written command survives, no connection stays
inside a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from typing import Any, NoReturn

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from ..database import engine_for, mask, refuse_missing_file, translate
from ..errors import ConfigurationError
from ..storage import backend_for
from ..storage.sqlite import SESSION_PRAGMAS

#: Connections a ledger opens at most for commands, unless told otherwise.
DEFAULT_POOL_SIZE = 10


class Result:
    """What a statement returned: its rows (if it returns any), the rows it changed and the
    rowid of the row it inserted (where the driver tells)."""

    __slots__ = ("lastrowid", "rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None = None) -> None:
        self.rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    def fetchall(self) -> list[Any]:
        return self.rows


class Driver:
    """How to connect to one database and run a statement there, asynchronously."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        #: What the driver raises (psycopg.Error, sqlite3.Error): translated at one place.
        self.errors: type[Exception] = engine.dialect.loaded_dbapi.Error
        self.autocommit = backend_for(engine).autocommit_commands
        self.begin = backend_for(engine).begin_command

    async def connect(self) -> Any:
        raise NotImplementedError

    async def execute(self, conn: Any, sql: str, parameters: Any) -> Result:
        raise NotImplementedError

    async def executemany(self, conn: Any, sql: str, rows: list[Any]) -> None:
        raise NotImplementedError

    async def rollback(self, conn: Any) -> None:
        raise NotImplementedError

    async def close(self, conn: Any) -> None:
        await conn.close()

    def is_disconnect(self, exc: Exception, conn: Any) -> bool:
        return bool(self.dialect.is_disconnect(exc, conn, None))  # type: ignore[arg-type]

    def raise_translated(self, exc: Exception, sql: str | None, conn: Any) -> NoReturn:
        """Raise the jobledger error for the driver's ``exc`` (see :func:`translate`)."""
        wrapped = self.wrapped(exc, sql, conn)
        mapped = translate(wrapped, self.engine)
        raise mapped from exc

    def wrapped(self, exc: Exception, sql: str | None, conn: Any) -> sa_exc.DBAPIError:
        """``exc`` as SQLAlchemy would raise it (``IntegrityError``, ``OperationalError``...)."""
        broken = self.is_disconnect(exc, conn)
        wrapped = sa_exc.DBAPIError.instance(
            sql, None, exc, self.errors, connection_invalidated=broken, dialect=self.dialect
        )
        assert isinstance(wrapped, sa_exc.DBAPIError)  # exc is a DBAPI error
        return wrapped


class PsycopgDriver(Driver):
    """psycopg 3's AsyncConnection, in autocommit like the sync store's command connections."""

    async def connect(self) -> Any:
        import psycopg  # noqa: PLC0415 (only PostgreSQL ledgers load it)

        cargs, cparams = self.dialect.create_connect_args(self.engine.url)
        try:
            return await psycopg.AsyncConnection.connect(*cargs, autocommit=True, **cparams)
        except psycopg.Error as exc:
            self.raise_translated(exc, None, None)

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # One cursor per connection serves every command (each reads its rows to the end).
        self._cursors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    async def execute(self, conn: Any, sql: str, parameters: Any) -> Result:
        cursor = self._cursors.get(conn)
        if cursor is None:
            cursor = self._cursors[conn] = conn.cursor()
        await cursor.execute(sql, parameters)
        rows = await cursor.fetchall() if cursor.description is not None else []
        return Result(rows, cursor.rowcount)

    async def executemany(self, conn: Any, sql: str, rows: list[Any]) -> None:
        async with conn.cursor() as cursor:
            await cursor.executemany(sql, rows)

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()


class AiosqliteDriver(Driver):
    """aiosqlite: sqlite3 on a thread of its own per connection, which the loop awaits."""

    async def connect(self) -> Any:
        import aiosqlite  # noqa: PLC0415 (only SQLite ledgers load it)

        refuse_missing_file(self.engine)  # connecting would create the file
        cargs, cparams = self.dialect.create_connect_args(self.engine.url)
        options = backend_for(self.engine).engine_options(self.engine.url)
        cparams = {**cparams, **options.get("connect_args", {})}
        try:
            conn = await aiosqlite.connect(*cargs, **cparams)
            conn.isolation_level = None  # jobledger writes BEGIN itself (see storage.sqlite)
            for pragma in SESSION_PRAGMAS:
                await conn.execute(pragma)
        except self.errors as exc:
            self.raise_translated(exc, None, None)
        return conn

    async def execute(self, conn: Any, sql: str, parameters: Any) -> Result:
        # Each await is a hop to the connection's thread and back: fetch only what returns
        # rows, and leave closing the cursor to the garbage collector (no hop).
        cursor = await conn.execute(sql, parameters)
        rows = list(await cursor.fetchall()) if cursor.description is not None else []
        return Result(rows, cursor.rowcount, cursor.lastrowid)

    async def executemany(self, conn: Any, sql: str, rows: list[Any]) -> None:
        await conn.executemany(sql, rows)

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    def is_disconnect(self, exc: Exception, conn: Any) -> bool:
        return bool(self.dialect.is_disconnect(exc, None, None))  # type: ignore[arg-type]


def driver_for(url: Any) -> Driver:
    """The async driver for a database URL (``postgresql+psycopg://`` or ``sqlite://``)."""
    engine = engine_for(url)
    name, driver = engine.dialect.name, engine.dialect.driver
    if name == "postgresql" and driver == "psycopg":
        return PsycopgDriver(engine)
    if name == "sqlite" and driver == "pysqlite":
        if backend_for(engine).engine_options(engine.url).get("poolclass") is not None:
            engine.dispose()
            raise ConfigurationError(
                f"the async ledger needs a SQLite file, not {mask(engine.url)} "
                "(in memory, each of its connections would see a database of its own)"
            )
        return AiosqliteDriver(engine)
    engine.dispose()
    raise ConfigurationError(
        f"the async ledger runs on postgresql+psycopg:// or sqlite:// URLs, not {mask(engine.url)}"
    )


class Connections:
    """Driver connections for commands: at most ``size`` in use, idle ones kept for the next.

    Each connection serves one command at a time. A command takes an idle one, or
    opens one when none is idle; when ``size`` are in use it waits for one to come
    back. (A new connection opens only while none is idle, so no more than ``size``
    are ever open.) After ``fork()`` the child opens its own.
    """

    def __init__(self, driver: Driver, size: int = DEFAULT_POOL_SIZE) -> None:
        if size < 1:
            raise ValueError("pool_size must be >= 1")
        self.driver = driver
        self.size = size
        self._idle: list[Any] = []
        self._in_use: asyncio.Semaphore | None = None
        self._pid = os.getpid()
        self._closing: set[asyncio.Task[None]] = set()
        #: How many connections are open now (in use or idle).
        self.open = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def take(self) -> tuple[Any, bool]:
        """A connection, and whether it was open already (``False``: just connected)."""
        if self._pid != os.getpid():
            self._idle, self._in_use, self.open, self._pid = [], None, 0, os.getpid()
        if self._in_use is None:  # made here: a semaphore belongs to the loop that uses it
            self._in_use = asyncio.Semaphore(self.size)
        await self._in_use.acquire()
        if self._idle:
            return self._idle.pop(), True
        try:
            conn = await self.driver.connect()
        except BaseException:
            self._in_use.release()
            raise
        self.open += 1
        return conn, False

    def give_back(self, conn: Any) -> None:
        """Keep ``conn`` for the next command (it must have no transaction open)."""
        self._idle.append(conn)
        assert self._in_use is not None
        self._in_use.release()

    async def discard(self, conn: Any, broken: bool = False) -> None:
        """Close ``conn`` for good (shielded: a second cancellation cannot stop the close);
        if it is ``broken``, every idle one too (the server probably restarted)."""
        assert self._in_use is not None
        self._in_use.release()
        closing = [conn]
        if broken:
            closing += self._idle
            self._idle = []
        for each in closing:
            task = asyncio.ensure_future(self._close(each))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            await asyncio.shield(task)

    async def _close(self, conn: Any) -> None:
        self.open -= 1
        with contextlib.suppress(Exception):  # a broken one may fail to close: gone either way
            await self.driver.close(conn)

    async def close(self) -> None:
        """Close every idle connection (and wait for discarded ones to finish closing)."""
        while self._idle:
            await self._close(self._idle.pop())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
