"""Where jobledger's SQL lives: one module per kind of database, chosen once per engine.

:func:`backend_for` gives an engine's :class:`~jobledger.storage.backend.Backend`
(``postgres``, ``sqlite``, or ``generic`` for any other dialect); commands run on
:mod:`~jobledger.storage.driver` statements (``jobledger.store``), plain reads in
:mod:`~jobledger.storage.reads`. Catch-up, the SQL lease store and the audit ask
the backend too, for their queries and session setup; the audit's bulk adapters
live in :mod:`jobledger.audit` (a layer above), one per :class:`BulkAccess`.
"""

from __future__ import annotations

import functools
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from .backend import Backend, BulkAccess
from .generic import GenericBackend
from .postgres import PostgresBackend
from .sqlite import SqliteBackend

__all__ = ["Backend", "BulkAccess", "backend_for", "backend_named", "database_clock"]


def backend_for(engine: Engine | Connection) -> Backend:
    """The backend of ``engine``'s database."""
    return backend_named(engine.dialect.name)


@functools.cache
def backend_named(name: str) -> Backend:
    """The backend of the SQLAlchemy dialect (or URL backend) called ``name``."""
    own = _OWN_BACKENDS.get(name)
    return own() if own is not None else GenericBackend(name)


_OWN_BACKENDS: dict[str, type[Backend]] = {"postgresql": PostgresBackend, "sqlite": SqliteBackend}


def database_clock(dialect_name: str) -> ColumnElement[datetime]:
    """The database server's current time: the only clock event timestamps come from."""
    return backend_named(dialect_name).clock()
