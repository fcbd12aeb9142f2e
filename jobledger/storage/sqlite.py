"""SQLite: a file, one writer at a time, WAL, and a command in a ``BEGIN IMMEDIATE``.

pysqlite's own transactions are broken (no BEGIN before a SELECT), so its
connections run with ``isolation_level=None`` and jobledger writes BEGIN itself.
WAL lets readers run beside the one writer; the busy timeout makes a writer wait
for another process's write instead of failing at once. A command takes the
write lock up front: a WAL reader that later tries to upgrade to a writer fails
at once instead of waiting its turn.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event, func
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from ..schema import UtcDateTime
from .generic import GenericBackend

#: How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT = 30.0


class SqliteBackend(GenericBackend):
    begin_command = "BEGIN IMMEDIATE"
    database_is_a_file = True

    def __init__(self) -> None:
        super().__init__("sqlite")

    def clock(self) -> ColumnElement[datetime]:
        return func.strftime("%Y-%m-%d %H:%M:%f", "now", type_=UtcDateTime)

    def engine_options(self, url: URL) -> dict[str, Any]:
        options: dict[str, Any] = {
            "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
        }
        if url.database in (None, "", ":memory:"):
            options["poolclass"] = StaticPool  # one shared connection, or each sees its own DB
        return options

    def configure(self, engine: Engine) -> None:
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "begin", _on_begin)

    def missing_file(self, url: URL) -> str | None:
        path = url.database
        if path in (None, "", ":memory:"):
            return None
        if url.query.get("uri") in ("true", "1"):
            return None  # an SQLite URI filename: its own options say what may be created
        return None if os.path.exists(path) else os.path.abspath(path)


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.close()


def _on_begin(connection: Any) -> None:
    # A command reads and then writes: take the write lock up front (see above).
    immediate = connection.get_execution_options().get("jobledger_write")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
