"""Engines, URLs, and the one place where driver errors become jobledger errors.

What differs between databases (engine options, session setup) is asked of the
engine's backend (:mod:`jobledger.storage`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator
from typing import Any, NoReturn
from urllib.parse import unquote_plus

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool, PoolProxiedConnection

from .errors import ConfigurationError, DatabaseUnavailable, InvalidPayload, SchemaMissing
from .storage import backend_for, backend_named
from .storage.sqlite import SQLITE_BUSY_TIMEOUT

__all__ = [
    "DEFAULT_URL",
    "MASK",
    "SQLITE_BUSY_TIMEOUT",
    "HeldConnections",
    "creating",
    "engine_for",
    "mask",
    "missing_file",
    "parse_url",
    "raise_translated",
    "refuse_missing_file",
    "translate",
    "translated_errors",
]
DEFAULT_URL = "sqlite:///jobledger.db"

# SQLSTATEs meaning "the schema is not there (yet)": undefined table / column.
_MISSING_SCHEMA_SQLSTATES = {"42P01", "42703"}
# SQLSTATE class "program limit exceeded" (a JSONB string over 256 MiB, say) and SQLite's
# SQLITE_TOOBIG: a value over the server's limits. Only the event data of our
# statements can grow that large, so this is a refused payload, never an outage.
_TOO_LARGE_SQLSTATE_CLASS = "54"
_TOO_LARGE_SQLITE_ERROR = "SQLITE_TOOBIG"


def parse_url(url: str | URL) -> URL:
    """Parse a database URL; ``postgresql://`` means psycopg 3, which the extra installs."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is no number
        raise ConfigurationError(f"not a database URL: {mask(str(url))!r} ({exc})") from None
    if parsed.host is not None and "@" in parsed.host:
        # SQLAlchemy ends the password at its first "@"; the rest would be taken for
        # the host, and the driver's error would then show it.
        raise ConfigurationError(
            f"not a database URL: {mask(str(url))!r} (a password containing '@' must "
            "be written with %40 in its place)"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


#: Query parameters whose values are secrets, in any case: libpq's ``password`` and
#: ``sslpassword``, redis-py's ``password`` and ``ssl_password`` (``passfile`` is a path).
_SECRET_PARAMETER = re.compile(r"pass(word|wd)|secret|token", re.IGNORECASE)
_PARAMETER = re.compile(r"(?<=[?&])(?P<name>[^=&?#]*)=(?P<value>[^&#]*)")
MASK = "***"


def mask(url: str | URL) -> str:
    """The URL as text with every secret in it replaced by ``***``.

    Secrets are the values of query parameters named like a password
    (``?password=``, ``sslpassword``, any case) and the password of the user
    information. A password may hold an unencoded ``@``, ``/``, ``?`` or ``#``,
    and parsers disagree on where it ends (SQLAlchemy: at the first ``@``, even
    past a ``/``; urllib and redis-py: at the last ``@`` before the first
    ``/?#``), so it is taken to run to the *last* ``@``: no part of it ever shows,
    at the cost of hiding more when a query value holds an ``@`` too.
    """
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    hidden = [match.span("value") for match in _PARAMETER.finditer(text) if _is_secret(match)]
    # After "//", or from the start: a mistyped scheme must not unmask the password.
    start = text.find("//") + 2 if "//" in text else 0
    colon, last_at = text.find(":", start), text.rfind("@", start)
    if -1 < colon < last_at and "/" not in text[start:colon]:  # user:password@, not a path
        hidden.append((colon + 1, last_at))
    shown, end = [], 0
    for first, last in sorted(hidden):  # spans may overlap: a query value may hold an "@"
        if first >= end:
            shown.append(text[end:first] + MASK)
        end = max(end, last)
    return "".join(shown) + text[end:]


def _is_secret(parameter: re.Match[str]) -> bool:
    return _SECRET_PARAMETER.search(unquote_plus(parameter["name"])) is not None


def engine_for(url: str | URL | Engine) -> Engine:
    """An Engine for ``url`` (or ``url`` itself), configured for jobledger's access pattern.

    Connecting never creates a missing database file, except inside :func:`creating`
    (``Ledger.migrate``): a read or a typo must not leave an empty file behind.
    """
    engine = url if isinstance(url, Engine) else _create_engine(url)
    if getattr(engine, "_jobledger_configured", False):
        return engine
    backend = backend_for(engine)
    backend.configure(engine)
    if backend.database_is_a_file:

        @event.listens_for(engine, "do_connect")
        def _refuse_to_create(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
            if not _creating.get():
                refuse_missing_file(engine)

    engine._jobledger_configured = True  # type: ignore[attr-defined]
    return engine


def _create_engine(url: str | URL) -> Engine:
    parsed = parse_url(url)
    options = backend_named(parsed.get_backend_name()).engine_options(parsed)
    try:
        return create_engine(parsed, **options)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        hint = " (install jobledger[postgres] for PostgreSQL)" if "postgres" in str(exc) else ""
        raise ConfigurationError(f"cannot use database URL {mask(parsed)}: {exc}{hint}") from None


def missing_file(engine: Engine) -> str | None:
    """The absolute path of ``engine``'s database file if it is one and does not exist."""
    return backend_for(engine).missing_file(engine.url)


def refuse_missing_file(engine: Engine) -> None:
    """``SchemaMissing`` if ``engine``'s SQLite database file does not exist."""
    path = missing_file(engine)
    if path is not None:
        raise SchemaMissing(
            f"database {mask(engine.url)} does not exist (no file {path}); "
            "run `jobledger db upgrade` or Ledger.migrate() to create it"
        )


@contextlib.contextmanager
def creating() -> Iterator[None]:
    """Inside this block (in this thread), connecting may create a SQLite file."""
    token = _creating.set(True)
    try:
        yield
    finally:
        _creating.reset(token)


_creating: contextvars.ContextVar[bool] = contextvars.ContextVar("creating", default=False)


@contextlib.contextmanager
def translated_errors(engine: Engine) -> Iterator[None]:
    """Turn connection and missing-schema driver errors into jobledger errors."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        raise_translated(exc, engine)
    except engine.dialect.loaded_dbapi.Error as exc:  # the driver used directly (bulk reads)
        wrapped = sa_exc.DBAPIError.instance(
            None, None, exc, engine.dialect.loaded_dbapi.Error, dialect=engine.dialect
        )
        assert isinstance(wrapped, sa_exc.DBAPIError)  # exc is a DBAPI error
        raise_translated(wrapped, engine)


def raise_translated(exc: sa_exc.DBAPIError, engine: Engine) -> NoReturn:
    """Raise the jobledger error for ``exc`` (chained to it), or ``exc`` if unexpected."""
    mapped = translate(exc, engine)
    if mapped is exc:
        raise exc
    raise mapped from exc


def translate(exc: sa_exc.DBAPIError, engine: Engine) -> Exception:
    """The jobledger error for a driver error, or the error itself if it is unexpected."""
    text = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    where = mask(engine.url)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _MISSING_SCHEMA_SQLSTATES or "no such table" in text or "no such column" in text:
        return SchemaMissing(
            f"database {where} has no up-to-date jobledger schema ({text}); "
            "run `jobledger db upgrade` or Ledger.migrate()"
        )
    if "connection option" in text or "invalid dsn" in text:
        return ConfigurationError(f"cannot use database URL {where}: {text}")
    if (sqlstate or "").startswith(_TOO_LARGE_SQLSTATE_CLASS) or (
        getattr(exc.orig, "sqlite_errorname", None) == _TOO_LARGE_SQLITE_ERROR
    ):
        return InvalidPayload(f"event data too large for database {where}: {text}")
    if exc.connection_invalidated or isinstance(
        exc, (sa_exc.OperationalError, sa_exc.InterfaceError)
    ):
        return DatabaseUnavailable(f"database {where} is unavailable: {text}")
    return exc


class HeldConnections:
    """DBAPI connections kept checked out of an Engine's pool between commands.

    Up to ``keep`` idle connections stay checked out (why: ``benchmarks/README.md``),
    each used by one command at a time (``list.pop``/``append`` are atomic, so
    threads may share the holder). A fresh connection still comes from the pool
    and is pre-pinged as usual; a held one that turns out broken is discarded
    with every idle one (the server probably restarted), and the caller may
    retry on a fresh one. A ``NullPool`` means "do not keep connections": then
    nothing is held.

    ``autocommit`` puts the held connections in autocommit mode (PostgreSQL's
    single-statement commands); they are reset before going back to the pool.
    """

    def __init__(self, engine: Engine, *, autocommit: bool, keep: int = 2) -> None:
        self.engine = engine
        self._autocommit = autocommit
        self._keep = 0 if isinstance(engine.pool, NullPool) else keep
        #: What the driver raises; :meth:`driver_error` turns it into SQLAlchemy's error.
        self.driver_errors: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._idle: list[PoolProxiedConnection] = []
        self._pid = os.getpid()
        # Connections inherited across fork() belong to the parent's sessions: never
        # use them, and never close them either (closing would end the parent's session).
        self._inherited: list[PoolProxiedConnection] = []

    def take(self) -> tuple[PoolProxiedConnection, bool]:
        """A connection, and whether it was held already (``False``: fresh from the pool)."""
        if self._pid != os.getpid():
            self._inherited, self._idle, self._pid = self._inherited + self._idle, [], os.getpid()
        try:
            return self._idle.pop(), True
        except IndexError:
            pass
        try:
            connection = self.engine.raw_connection()
        except self.driver_errors as exc:  # cannot connect: wrapped as SQLAlchemy does
            raise self.driver_error(exc, None, None) from exc
        if self._autocommit:
            try:
                dbapi_connection: Any = connection.dbapi_connection
                self.engine.dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
            except BaseException:
                connection.invalidate()
                raise
        return connection, False

    def give_back(self, connection: PoolProxiedConnection) -> None:
        """Keep ``connection`` for the next command (it must have no transaction open)."""
        if len(self._idle) < self._keep and self._pid == os.getpid():
            self._idle.append(connection)
        else:
            self._release(connection)

    def discard(self, connection: PoolProxiedConnection, broken: bool) -> None:
        """Close ``connection`` for good; if it is ``broken``, every idle one too."""
        connection.invalidate()
        if broken:
            while self._idle:
                self._idle.pop().invalidate()

    def close(self) -> None:
        """Return every idle connection to the pool."""
        while self._idle:
            self._release(self._idle.pop())

    def _release(self, connection: PoolProxiedConnection) -> None:
        if self._autocommit and connection.dbapi_connection is not None:
            self.engine.dialect.reset_isolation_level(connection.dbapi_connection)
        connection.close()

    def driver_error(
        self, exc: Exception, statement: str | None, connection: PoolProxiedConnection | None
    ) -> sa_exc.DBAPIError:
        """``exc``, raised by the driver outside SQLAlchemy, as SQLAlchemy would raise it.

        The result goes through :func:`translated_errors` like any other driver
        error; ``connection_invalidated`` says whether ``connection`` is broken.
        """
        dialect = self.engine.dialect
        dbapi_connection = connection.dbapi_connection if connection is not None else None
        broken = dialect.is_disconnect(exc, dbapi_connection, None)  # type: ignore[arg-type]
        wrapped = sa_exc.DBAPIError.instance(
            statement,
            None,
            exc,
            self.driver_errors,
            connection_invalidated=broken,
            dialect=dialect,
        )
        assert isinstance(wrapped, sa_exc.DBAPIError)  # exc is a DBAPI error
        return wrapped
