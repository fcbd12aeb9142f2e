"""PostgreSQL: each write ONE statement in autocommit, and batches by COPY.

The guarded write is a data-modifying CTE: the projection row is updated
``WHERE version = expected`` (or inserted, for a new job) and the event is
inserted only for the row that CTE wrote, all or nothing, so a command costs
two round trips: read, write. Every event carries its writer's
``pg_current_xact_id()``, which catch-up readers need (``jobledger.catchup``).

A writer that knows the job's row may skip the read (``Store.write_unread``):
its write is guarded by that row (every column of a row handed over; the version
and last hash of one this process wrote) and by its timestamp lying within
:data:`CLOCK_TOLERANCE` of ``now()`` as the statement runs. A new job's write may
skip it too, guarded by the clock alone.

Catch-up reads below the transaction-id horizon (why: :mod:`jobledger.catchup`);
the audit reads in a REPEATABLE READ snapshot, in a UTC session, and in bulk by
COPY (:mod:`jobledger.audit.postgres`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Dialect,
    Integer,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.elements import ColumnElement

from ..records import Event, JobStatus
from ..schema import EVENT_FIELDS, STATUS_FIELDS, Json, UtcDateTime, Xid8, events, jobs
from .backend import (
    CLOCK_TOLERANCE,
    EVENT_COLUMNS,
    Backend,
    BulkAccess,
    CommandStatements,
    Run,
    UnreadWrites,
    WriteStep,
    as_held,
    as_known,
    guarded_update,
    load_statement,
)
from .driver import DriverStatement, command_cursor
from .rows import (
    StoredEvent,
    event_row,
    held_layout,
    status_row,
    unread_layout,
    write_layout,
)


class PostgresBackend(Backend):
    name = "postgresql"
    autocommit_commands = True
    initial_checkpoint_tx = 0

    def clock(self) -> ColumnElement[datetime]:
        return func.now(type_=UtcDateTime)

    def transaction_id(self) -> ColumnElement[Any]:
        return func.pg_current_xact_id()

    def engine_options(self, url: URL) -> dict[str, Any]:
        return {"pool_pre_ping": True}  # a worker outlives database restarts

    def copies_batches(self, dialect: Dialect) -> bool:
        return dialect.driver == "psycopg"

    def commands(self, dialect: Dialect) -> PostgresCommands:
        return PostgresCommands(self, dialect)

    def pending_events_query(self) -> Any:
        return (
            select(*EVENT_COLUMNS, cast(cast(events.c.tx_id, Text), BigInteger).label("tx_id"))
            .where(events.c.tx_id < _horizon(), _past_checkpoint())
            .order_by(events.c.tx_id, events.c.position)
            .limit(bindparam("limit"))
        )

    def held_back_query(self) -> Any:
        return _HELD_BACK

    def oldest_writer_query(self) -> Any:
        return _OLDEST_WRITER

    def prepare_snapshot(self, conn: Connection) -> None:
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)

    def utc_session(self, conn: Connection) -> None:
        """Timestamps in ``timezone.utc``, as :class:`~jobledger.schema.UtcDateTime` returns
        them, so that the audit can read event times as plain timestamps."""
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")

    def lock_for_rebuild(self, conn: Connection) -> None:
        # Every append writes a jobs row first, so appends wait; readers do not.
        conn.exec_driver_sql(f"LOCK TABLE {jobs.name} IN SHARE ROW EXCLUSIVE MODE")

    def audit_event_columns(self) -> tuple[Any, Any]:
        data = cast(events.c.data, Text)  # psycopg's JSONB loader costs twice json's decoder
        # The session runs in UTC (utc_session), so plain timestamps are already what
        # UtcDateTime would return.
        return data, type_coerce(events.c.recorded_at, DateTime(timezone=True))

    def stored_event(self) -> Callable[[Any], StoredEvent]:
        return _stored_event

    def bulk_access(self, dialect: Dialect) -> BulkAccess:
        if dialect.driver == "psycopg":
            return BulkAccess.POSTGRES_COPY
        return BulkAccess.SQLALCHEMY  # other drivers' COPY APIs differ


class PostgresCommands(CommandStatements):
    """One-statement writes, and the COPY streams of a batch."""

    unread: UnreadWrites

    def __init__(self, backend: Backend, dialect: Dialect) -> None:
        dialect = positional(dialect)
        source = write_layout()
        moved = guarded_update().returning(jobs.c.job_id)
        self.load = DriverStatement(load_statement(backend.clock()), dialect, ("job_id",))
        self.pg_append = DriverStatement(_append_after(moved.cte("moved")), dialect, source)
        unread = _append_after(moved.where(_on_the_clock(), *as_known()).cte("moved"))
        self.pg_append_unread = DriverStatement(unread, dialect, unread_layout())
        held = _append_after(moved.where(_on_the_clock(), as_held()).cte("moved"))
        # Not an attribute, so that by_name() keeps its list; unread_by_name() names it.
        append_held = DriverStatement(held, dialect, held_layout())
        created = _created(postgresql.insert(jobs).values(_status_binds()))
        self.pg_create = DriverStatement(_append_after(created), dialect, source)
        self.append_steps = (WriteStep(self.pg_append),)
        self.create_steps = (WriteStep(self.pg_create),)
        new_row = select(*_status_binds().values()).where(_on_the_clock())
        created_unread = _created(postgresql.insert(jobs).from_select(STATUS_FIELDS, new_row))
        self.pg_create_unread = DriverStatement(_append_after(created_unread), dialect, source)
        self.unread = UnreadWrites(
            seen=(WriteStep(self.pg_append_unread),),
            held=(WriteStep(append_held),),
            create=(WriteStep(self.pg_create_unread),),
        )
        # A batch: the transaction's clock and id, then the rows to COPY.
        clock = select(backend.clock().label("now"), cast(func.pg_current_xact_id(), Text))
        self.batch_clock = DriverStatement(clock, dialect)
        self.jobs_rows = DriverStatement(insert(jobs), dialect, STATUS_FIELDS, STATUS_FIELDS)
        insert_events = insert(events).values(tx_id=backend.transaction_id())
        self.events_rows = DriverStatement(insert_events, dialect, EVENT_FIELDS, EVENT_FIELDS)
        # COPY takes the columns in the order the rows are laid out.
        self.jobs_copy = copy_sql(jobs.name, self.jobs_rows.names)
        self.events_copy = copy_sql(events.name, (*self.events_rows.names, "tx_id"))
        self.copy_description = f"{self.jobs_copy}; {self.events_copy}"

    @property
    def append_unread(self) -> DriverStatement:
        return self.pg_append_unread

    @property
    def create_unread(self) -> DriverStatement:
        return self.pg_create_unread

    def unread_by_name(self) -> dict[str, DriverStatement]:
        return {"pg_append_held": self.unread.held[0].statement}

    def batch_start(self, run: Run, conn: PoolProxiedConnection) -> tuple[datetime, Any]:
        """The batch transaction's ``now()`` and ``pg_current_xact_id()`` (as text)."""
        (row,) = run(conn, self.batch_clock, ()).fetchall()
        now, tx_id = self.batch_clock.read(row)
        return now, tx_id

    def copy(
        self, conn: PoolProxiedConnection, pairs: Sequence[tuple[Event, JobStatus]], tx_id: Any
    ) -> None:
        """COPY the jobs and events of a batch, in the caller's transaction.

        The rows carry exactly what the INSERTs would: the values pass through
        the same column processors, and ``tx_id`` is the transaction's own. A
        duplicate id fails the COPY.
        """
        cursor = command_cursor(conn)
        for sql, rows in self.copy_streams(pairs, tx_id):
            with cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)

    def copy_streams(
        self, pairs: Sequence[tuple[Event, JobStatus]], tx_id: Any
    ) -> tuple[tuple[str, Iterator[list[Any]]], ...]:
        """Each COPY of a batch and the rows it streams, in order (sync and async alike)."""
        return (
            (self.jobs_copy, (self.jobs_rows.row(status_row(status)) for _, status in pairs)),
            (
                self.events_copy,
                ([*self.events_rows.row(event_row(event)), tx_id] for event, _ in pairs),
            ),
        )


def positional(dialect: Dialect) -> Dialect:
    """``dialect``, compiling ``%s`` placeholders where it would compile ``%(name)s``.

    The driver then takes a command's values as the list they already are: named
    placeholders cost a dict per statement, which psycopg turns back into a list
    (the same SQL otherwise; why: ``benchmarks/README.md``, issue 13).
    """
    if dialect.paramstyle != "pyformat":
        return dialect
    copied = copy.copy(dialect)
    copied.paramstyle, copied.positional = "format", True
    return copied


def _status_binds() -> dict[str, Any]:
    return {name: bindparam("j_" + name, type_=jobs.c[name].type) for name in STATUS_FIELDS}


def _created(insert_row: Any) -> Any:
    """The new job's row, unless the id exists: the CTE an event is appended after."""
    return (
        insert_row.on_conflict_do_nothing(index_elements=[jobs.c.job_id])
        .returning(jobs.c.job_id)
        .cte("created")
    )


def _on_the_clock() -> Any:
    """The event's timestamp, chosen by the client, lies within tolerance of ``now()``."""
    stamped = bindparam("e_recorded_at", type_=UtcDateTime)
    tolerance: Any = literal_column(f"interval '{CLOCK_TOLERANCE.total_seconds():g} seconds'")
    return stamped.between(func.now() - tolerance, func.now() + tolerance)


def _horizon() -> Any:
    """Every transaction with a smaller id has ended."""
    return func.pg_snapshot_xmin(func.pg_current_snapshot())


def _past_checkpoint() -> Any:
    """Events after the checkpoint (transaction id, position)."""
    after = cast(cast(bindparam("tx_id", type_=BigInteger), Text), Xid8())  # no bigint -> xid8
    return tuple_(events.c.tx_id, events.c.position) > tuple_(after, bindparam("position"))


#: How many committed events past the checkpoint are above the horizon.
_HELD_BACK = (
    select(func.count()).select_from(events).where(events.c.tx_id >= _horizon(), _past_checkpoint())
)

_OLDEST_WRITER = text(
    "SELECT pid, datname, state, xact_start FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
    "ORDER BY age(backend_xid) DESC LIMIT 1"
)

# json.loads minus its two Python-level wrappers, which only strip surrounding
# whitespace: JSONB's text output never has any.
_decode_jsonb = json.JSONDecoder().raw_decode


def _stored_event(row: Any) -> StoredEvent:
    position, job_id, version, kind, process, data, moment, prev_hash, hash_ = row
    value = _decode_jsonb(data)[0]
    fields = (position, job_id, version, kind, process, value, moment, prev_hash, hash_)
    return tuple.__new__(StoredEvent, fields)


def copy_sql(table: str, columns: Sequence[str]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN"


def _append_after(guard: Any) -> Any:
    """INSERT the event only for the row the ``guard`` CTE wrote: all or nothing, one statement."""
    types: dict[str, Any] = {"version": Integer(), "data": Json, "recorded_at": UtcDateTime}
    row: Any = select(
        guard.c.job_id,
        *(bindparam("e_" + n, type_=types.get(n, String())) for n in EVENT_FIELDS[1:]),
        func.pg_current_xact_id(),
    ).select_from(guard)
    columns = [events.c[name] for name in EVENT_FIELDS] + [events.c.tx_id]
    return insert(events).from_select(columns, row).returning(events.c.position)
