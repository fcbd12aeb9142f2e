"""SQLite: a file, one writer at a time, WAL, and a command in a ``BEGIN IMMEDIATE``.

pysqlite's own transactions are broken (no BEGIN before a SELECT), so its
connections run with ``isolation_level=None`` and jobledger writes BEGIN itself.
WAL lets readers run beside the one writer; the busy timeout makes a writer wait
for another process's write instead of failing at once. A command takes the
write lock up front: a WAL reader that later tries to upgrade to a writer fails
at once instead of waiting its turn.

One writer at a time also means commit order is position order, so catch-up
reads events by position alone, and a ledger keeps its leases in a file of its
own (see :mod:`jobledger.liveness.sql`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Dialect,
    Engine,
    Text,
    bindparam,
    event,
    func,
    insert,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from ..schema import EVENT_FIELDS, STATUS_FIELDS, UtcDateTime, events, jobs
from .backend import (
    CLOCK_TOLERANCE,
    EVENT_COLUMNS,
    Backend,
    BulkAccess,
    UnreadWrites,
    WriteStep,
    as_held,
    as_known,
    guarded_update,
)
from .driver import DriverStatement
from .generic import GenericBackend, TwoStatementCommands
from .rows import StoredEvent, held_layout, unread_layout, write_layout

#: How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT = 30.0


class SqliteBackend(GenericBackend):
    begin_command = "BEGIN IMMEDIATE"
    database_is_a_file = True
    one_write_lock = True

    def __init__(self) -> None:
        super().__init__("sqlite")

    def clock(self) -> ColumnElement[datetime]:
        return func.strftime("%Y-%m-%d %H:%M:%f", "now", type_=UtcDateTime)

    def commands(self, dialect: Dialect) -> SqliteCommands:
        return SqliteCommands(self, dialect)

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

    def lease_url(self, ledger_url: URL) -> URL | None:
        """A file's in ``<file>-leases``, an in-memory database's in itself (the rules:
        :func:`jobledger.liveness.sql.lease_url`)."""
        database = ledger_url.database
        if not database or database == ":memory:" or "mode=memory" in str(ledger_url):
            return None
        return ledger_url.set(database=f"{database}-leases")

    def configure_lease_store(self, engine: Engine) -> None:
        event.listen(engine, "connect", _no_fsync_per_commit)

    def pending_events_query(self) -> Any:
        return (
            select(*EVENT_COLUMNS, events.c.tx_id)
            .where(events.c.position > bindparam("position"))
            .order_by(events.c.position)
            .limit(bindparam("limit"))
        )

    def audit_event_columns(self) -> tuple[Any, Any]:
        # Decoding the text here costs less than the column types' own processing.
        return type_coerce(events.c.data, Text), type_coerce(events.c.recorded_at, Text)

    def stored_event(self) -> Callable[[Any], StoredEvent]:
        return _stored_event

    def bulk_access(self, dialect: Dialect) -> BulkAccess:
        return BulkAccess.SQLITE3


class SqliteCommands(TwoStatementCommands):
    """The two statements of a write, and the same guarded by a known row instead of a read.

    SQLite has no data-modifying CTE, so an unread write is the guarded ``UPDATE`` (whose
    ``WHERE`` holds the known row's guard and the clock's) and the event's ``INSERT``,
    inside the command's ``BEGIN IMMEDIATE``: no read, and the same statements as the
    ordinary write otherwise.
    """

    # RETURNING costs SQLite more than the rest of the insert: it runs the statement to its
    # end into a temporary table before handing back a row.
    positions_by_rowid = True

    def __init__(self, backend: Backend, dialect: Dialect) -> None:
        super().__init__(backend, dialect)
        update = guarded_update().where(_on_the_clock())
        insert_event: Any = insert(events).values(tx_id=None)
        seen, held = unread_layout(), held_layout()
        self.sqlite_update_seen = DriverStatement(update.where(*as_known()), dialect, seen)
        self.sqlite_insert_seen = DriverStatement(
            insert_event, dialect, unread_layout(event_prefix=""), EVENT_FIELDS
        )
        self.sqlite_update_held = DriverStatement(update.where(as_held()), dialect, held)
        self.sqlite_insert_held = DriverStatement(
            insert_event, dialect, held_layout(event_prefix=""), EVENT_FIELDS
        )
        new_row = select(*(bindparam(name, type_=jobs.c[name].type) for name in STATUS_FIELDS))
        create = insert(jobs).from_select(STATUS_FIELDS, new_row.where(_on_the_clock()))
        self.sqlite_create = DriverStatement(create, dialect, write_layout(status_prefix=""))
        self.unread = UnreadWrites(
            seen=(
                WriteStep(self.sqlite_update_seen, guard=True),
                WriteStep(self.sqlite_insert_seen),
            ),
            held=(
                WriteStep(self.sqlite_update_held, guard=True),
                WriteStep(self.sqlite_insert_held),
            ),
            # An existing id breaks the primary key: IntegrityError, nothing written.
            create=(WriteStep(self.sqlite_create, guard=True), WriteStep(self.insert_event)),
        )


def _on_the_clock(event_prefix: str = "e_") -> Any:
    """The event's timestamp, chosen by the client, lies within tolerance of SQLite's clock
    (``'now'`` is one instant for the whole statement)."""
    stamped = bindparam(event_prefix + "recorded_at", type_=UtcDateTime)
    seconds: Any = literal_column(f"{CLOCK_TOLERANCE.total_seconds()!r} / 86400.0")  # in days
    off_by = func.julianday(stamped) - func.julianday(literal_column("'now'"))
    return off_by.between(-seconds, seconds)


def _stored_event(row: Any) -> StoredEvent:
    position, job_id, version, kind, process, data, moment, prev_hash, hash_ = row
    instant = datetime.fromisoformat(moment).replace(tzinfo=timezone.utc)  # stored as UTC
    try:
        value = json.loads(data)
    except ValueError:
        # Only an edit behind the ledger's back stores text that is not JSON; kept as
        # a string, the fold of an event that needs its data reports CorruptHistory.
        value = data
    fields = (position, job_id, version, kind, process, value, instant, prev_hash, hash_)
    return tuple.__new__(StoredEvent, fields)


def _no_fsync_per_commit(dbapi_connection: Any, record: Any) -> None:
    """WAL with ``synchronous=NORMAL``: commits stop waiting for fsync, which a big write
    elsewhere on the disk can hold up for seconds. Power loss may undo the latest
    refreshes, and leaves no process of this host alive to need them; the file stays
    consistent."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


#: What every connection to a ledger file runs first (after ``isolation_level = None``).
SESSION_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}",
)


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in SESSION_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _on_begin(connection: Any) -> None:
    # A command reads and then writes: take the write lock up front (see above).
    immediate = connection.get_execution_options().get("jobledger_write")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
