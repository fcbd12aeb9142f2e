"""What one kind of database does its own way, behind one class: :class:`Backend`.

A backend owns its statements, its clock, how its engines and sessions are set
up and, where it has one, its bulk path. :func:`jobledger.storage.backend_for`
picks one per engine, once; the rest of jobledger asks it instead of testing
the dialect's name. This module also holds the statements most backends share.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, runtime_checkable

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    bindparam,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.elements import ColumnElement

from ..errors import ConfigurationError
from ..records import Event, JobStatus
from ..schema import EVENT_FIELDS, STATUS_FIELDS, events, jobs
from .driver import DriverStatement, first_value
from .rows import StoredEvent, held_values, unread_values, write_values

#: How far a timestamp chosen by this process may lie from the database clock (an unread
#: write's guard: :class:`UnreadWrites`).
CLOCK_TOLERANCE = timedelta(milliseconds=100)

#: How a command runs one statement: ``run(connection, statement, values)``, a cursor.
Run = Callable[[PoolProxiedConnection, DriverStatement, tuple[Any, ...]], Any]


class WriteStep(NamedTuple):
    """One statement of a guarded write, as data: the sync store and the async one
    (:mod:`jobledger.aio`) send the same statements in the same order.

    The write's result is the position the last step returns (its first row's first
    column, or the cursor's ``lastrowid`` for an insert that returns no rows), or ``None``
    when a ``guard`` step matched no row: then the writer lost the race, and the steps
    after it are not sent.
    """

    statement: DriverStatement
    guard: bool = False  # the write is refused unless this statement changed exactly one row


def run_steps(
    steps: Sequence[WriteStep], run: Run, conn: PoolProxiedConnection, values: tuple[Any, ...]
) -> int | None:
    """Send ``steps`` with ``values`` through ``run``: the new event's position, or ``None``."""
    cursor: Any = None
    for step in steps:
        cursor = run(conn, step.statement, values)
        if step.guard and cursor.rowcount != 1:
            return None
    return first_value(cursor) if steps[-1].statement.returns_rows else cursor.lastrowid


class UnreadWrites(NamedTuple):
    """A backend's writes sent without reading the job first (``Store.write_unread``), as
    :class:`WriteStep` lists that the sync and the async store both send, inside the
    backend's ``begin_command`` transaction where it has one. Each is guarded by the
    database clock too: the event's timestamp, chosen by the client, must lie within
    ``CLOCK_TOLERANCE`` of it as the write runs.

    The values each list takes are :func:`unread_write`'s.
    """

    #: A claim from a row handed over (``jobledger.handoff``): guarded by every column of it,
    #: since the row is a hint that may be stale or forged.
    seen: tuple[WriteStep, ...]
    #: A holder's write on the row this process wrote itself: guarded by its version and its
    #: last hash, which together name that row (it is the fold of the chain ending there).
    held: tuple[WriteStep, ...]
    #: A new job: guarded by the clock alone (the primary key refuses an existing id).
    create: tuple[WriteStep, ...]


def unread_write(
    writes: UnreadWrites, known: JobStatus | None, held: bool, event: Event, status: JobStatus
) -> tuple[tuple[WriteStep, ...], tuple[Any, ...]]:
    """The steps of an unread write after ``known`` (``None``: a new job) and their values;
    ``held``: ``known`` is a row this process wrote, not one handed over."""
    if known is None:
        return writes.create, write_values(0, status, event)
    if held:
        return writes.held, held_values(known, status, event)
    return writes.seen, unread_values(known, status, event)


class CommandStatements:
    """A backend's command statements, compiled for one dialect.

    Each takes the values of :func:`~jobledger.storage.rows.write_values` (the
    load: the job id alone). ``append`` and ``create`` return the new event's
    position, or ``None`` when the version guard refused the write and nothing
    was written (the unique constraint behind the guard raises ``IntegrityError``).
    """

    load: DriverStatement

    #: The writes sent without reading first, where the backend has them.
    unread: UnreadWrites | None = None

    @property
    def append_unread(self) -> DriverStatement | None:
        """The write sent without reading first (``Store.write_unread``), if the backend has it."""
        return None

    @property
    def create_unread(self) -> DriverStatement | None:
        """A new job's write sent without reading first (``Store.write_unread``), if any."""
        return None

    #: The statements of an append to an existing job (guarded by its version).
    append_steps: tuple[WriteStep, ...]
    #: The statements that create a new job with its first event.
    create_steps: tuple[WriteStep, ...]

    def append(self, run: Run, conn: PoolProxiedConnection, values: tuple[Any, ...]) -> int | None:
        return run_steps(self.append_steps, run, conn, values)

    def create(self, run: Run, conn: PoolProxiedConnection, values: tuple[Any, ...]) -> int | None:
        return run_steps(self.create_steps, run, conn, values)

    def by_name(self) -> dict[str, DriverStatement]:
        """Every statement, by name (the benchmarks run the same SQL raw)."""
        return {name: s for name, s in vars(self).items() if isinstance(s, DriverStatement)}

    def unread_by_name(self) -> dict[str, DriverStatement]:
        """The statements of the unread writes that :meth:`by_name` does not list, by name."""
        return {}


@runtime_checkable
class BulkCopy(Protocol):
    """Command statements that can also stream a batch of new jobs (COPY)."""

    #: What the driver is told, for error messages.
    copy_description: str

    def batch_start(self, run: Run, conn: PoolProxiedConnection) -> tuple[datetime, Any]:
        """The batch transaction's database time and the id its events carry."""

    def copy(
        self, conn: PoolProxiedConnection, pairs: Sequence[tuple[Event, JobStatus]], tx_id: Any
    ) -> None:
        """Stream the jobs and events of a batch, in the caller's transaction."""


class BulkAccess(enum.Enum):
    """How a backend's tables can be read and written whole, below SQLAlchemy's result
    layer; :mod:`jobledger.audit` has one bulk adapter for each."""

    #: Nothing faster than SQLAlchemy Core.
    SQLALCHEMY = "sqlalchemy"
    #: PostgreSQL's ``COPY`` in text format, on psycopg (3).
    POSTGRES_COPY = "postgres-copy"
    #: The sqlite3 module's own cursors, on the connection or the database file.
    SQLITE3 = "sqlite3"


class BatchStatements(NamedTuple):
    """What ``create_many`` runs through SQLAlchemy: the clock, then two multi-row INSERTs."""

    clock: Any
    insert_status: Any
    insert_events: Any


class Backend:
    """A kind of database (see the module's docstring). This base is what any
    SQLAlchemy dialect can do; subclasses do better where their database can."""

    #: The SQLAlchemy dialect's name.
    name: str = "default"
    #: Commands run on autocommit connections, each write one statement that commits by
    #: itself. Otherwise a command is one transaction on its connection, committed at its end.
    autocommit_commands: bool = False
    #: The SQL that opens a command's transaction (``None``: the driver opens one itself).
    begin_command: str | None = None
    #: A database is a file, which connecting could create (see ``database.engine_for``).
    database_is_a_file: bool = False
    #: One write lock for the whole database: a read under it shows that writes get through.
    one_write_lock: bool = False
    #: The transaction id a new catch-up checkpoint starts from (``None``: ids are not read).
    initial_checkpoint_tx: int | None = None

    def clock(self) -> ColumnElement[datetime]:
        """The database server's current time: the only clock event timestamps come from."""
        raise NotImplementedError

    def transaction_id(self) -> ColumnElement[Any] | None:
        """The writing transaction's id, stored with each event (``None``: not kept)."""
        return None

    def engine_options(self, url: URL) -> dict[str, Any]:
        """Keyword arguments for ``create_engine(url)``."""
        return {}

    def configure(self, engine: Engine) -> None:
        """Set up ``engine``'s sessions (called once per engine)."""

    def missing_file(self, url: URL) -> str | None:
        """The absolute path of the database file ``url`` names, if it is one and is missing."""
        return None

    def copies_batches(self, dialect: Dialect) -> bool:
        """Whether ``create_many`` streams its rows (the commands are a :class:`BulkCopy`)."""
        return False

    def commands(self, dialect: Dialect) -> CommandStatements:
        """The command statements, compiled for ``dialect`` (which must know its server)."""
        raise NotImplementedError

    # -- liveness: lease tables (jobledger.liveness.sql) --

    def lease_url(self, ledger_url: URL) -> URL | None:
        """Where the leases of the ledger at ``ledger_url`` live, if not in its own database."""
        return None

    def configure_lease_store(self, engine: Engine) -> None:
        """Set up an engine made for a lease table alone (called once per engine)."""

    # -- catch-up projections (jobledger.catchup) --

    def pending_events_query(self) -> Any:
        """The next events after a checkpoint, in delivery order, with their writer's id.

        Binds ``position``, ``tx_id`` (the checkpoint) and ``limit``.
        """
        raise ConfigurationError(
            f"catch-up projections need PostgreSQL or SQLite, not {self.name} "
            "(elsewhere positions can commit out of order and events would be skipped)"
        )

    def held_back_query(self) -> Any | None:
        """How many committed events past a checkpoint cannot be delivered yet (binds
        ``position`` and ``tx_id``); ``None`` where none ever wait."""
        return None

    def oldest_writer_query(self) -> Any:
        """The open transaction held-back events wait for: ``(pid, database, state, since)``
        (``None`` where none ever wait)."""
        return None

    # -- audit (jobledger.audit) --

    def prepare_snapshot(self, conn: Connection) -> None:
        """Make ``conn``'s next transaction read one consistent state of the database."""

    def utc_session(self, conn: Connection) -> None:
        """Make the transaction on ``conn`` hand out timestamps in UTC (where it has a zone)."""

    def lock_for_rebuild(self, conn: Connection) -> None:
        """Keep writers off the projection until the rebuild's transaction on ``conn`` ends."""

    def audit_event_columns(self) -> tuple[Any, Any]:
        """The ``data`` and ``recorded_at`` columns as replay selects them."""
        return events.c.data, events.c.recorded_at

    def stored_event(self) -> Callable[[Any], StoredEvent]:
        """Turns a row selected with :meth:`audit_event_columns` into a StoredEvent."""
        return StoredEvent._make

    def bulk_access(self, dialect: Dialect) -> BulkAccess:
        """How the audit reads and writes whole tables through ``dialect``'s driver."""
        return BulkAccess.SQLALCHEMY

    def batch_statements(self) -> BatchStatements:
        return BatchStatements(
            clock=select(self.clock().label("now")),
            insert_status=insert(jobs),
            insert_events=insert(events).values(tx_id=self.transaction_id()),
        )


def load_statement(clock: ColumnElement[datetime]) -> Any:
    """The job's row (all NULL if there is none) and the database clock, in one row."""
    one = select(literal_column("1").label("one")).subquery("one")
    return select(clock.label("now"), *jobs.c).select_from(
        one.outerjoin(jobs, jobs.c.job_id == bindparam("job_id"))
    )


#: Every column of an event, position first.
EVENT_COLUMNS = (events.c.position, *(events.c[name] for name in EVENT_FIELDS))


def as_known() -> list[Any]:
    """Every column of the row is what the writer decided on (the ``k_`` values): the guard
    of a write from a row handed over (:attr:`UnreadWrites.seen`), so that a stale or forged
    one writes nothing. The version is :func:`guarded_update`'s own guard."""
    return [
        jobs.c[name].is_not_distinct_from(bindparam("k_" + name, type_=jobs.c[name].type))
        for name in STATUS_FIELDS
        if name not in ("job_id", "version")
    ]


def as_held() -> Any:
    """The row is the one this process wrote (:attr:`UnreadWrites.held`): with
    :func:`guarded_update`'s version, its last hash."""
    return jobs.c.last_hash == bindparam("k_last_hash", type_=jobs.c.last_hash.type)


def guarded_update() -> Any:
    """The projection row's update, matching only at the version the writer read."""
    return (
        update(jobs)
        .where(jobs.c.job_id == bindparam("j_job_id"), jobs.c.version == bindparam("expected"))
        .values({name: bindparam("j_" + name) for name in STATUS_FIELDS if name != "job_id"})
    )
