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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from .database import translated_errors
from .records import Event, JobStatus
from .schema import Json, UtcDateTime, events, jobs

STATUS_FIELDS: tuple[str, ...] = tuple(c.name for c in jobs.columns)
EVENT_FIELDS: tuple[str, ...] = (
    "job_id",
    "version",
    "type",
    "process",
    "data",
    "recorded_at",
    "prev_hash",
    "hash",
)


def status_from_row(row: Any) -> JobStatus:
    return JobStatus(**{name: row._mapping[name] for name in STATUS_FIELDS})


def event_from_row(row: Any) -> Event:
    return Event(position=row.position, **{name: row._mapping[name] for name in EVENT_FIELDS})


def status_values(status: JobStatus, prefix: str = "") -> dict[str, Any]:
    return {prefix + name: getattr(status, name) for name in STATUS_FIELDS}


def event_values(event: Event, prefix: str = "") -> dict[str, Any]:
    return {prefix + name: getattr(event, name) for name in EVENT_FIELDS}


def database_clock(dialect_name: str) -> ColumnElement[datetime]:
    """The database server's current time: the only clock event timestamps come from."""
    if dialect_name == "postgresql":
        return func.now(type_=UtcDateTime)
    if dialect_name == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M:%f", "now", type_=UtcDateTime)
    if dialect_name in ("mysql", "mariadb"):
        return func.utc_timestamp(6, type_=UtcDateTime)
    return func.current_timestamp(type_=UtcDateTime)


@dataclass(frozen=True)
class _Statements:
    load: Any
    clock: Any
    guarded_update: Any
    insert_event: Any
    insert_status: Any
    insert_events_many: Any
    pg_append: Any
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
    pg_append = pg_create = None
    if dialect_name == "postgresql":
        pg_append = _pg_append(guarded_update.returning(jobs.c.job_id).cte("moved"))
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


class LostRace(Exception):
    """Another writer appended to the job first; nothing was written. Internal: retried."""


class Command:
    """One read-decide-write cycle on one job (see :meth:`Store.command`)."""

    def __init__(self, store: Store, conn: Connection, status: JobStatus | None, now: datetime):
        self._store, self._conn = store, conn
        self.status, self.now = status, now

    def write(self, event: Event, status: JobStatus) -> int:
        """Store ``event`` and the job's new ``status``; its position. ``LostRace`` if beaten."""
        if self.status is None:
            position = self._store._create(self._conn, event, status)
        else:
            position = self._store._append(self._conn, self.status.version, event, status)
        if position is None:
            raise LostRace(event.job_id)
        return position


class Store:
    """Reads and guarded writes of events and projection rows for one Engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.is_postgres = self.dialect == "postgresql"
        self._sql = _statements(self.dialect)
        # Commands: autocommit single statements on PostgreSQL, BEGIN IMMEDIATE elsewhere.
        # Batches: an ordinary transaction on PostgreSQL, BEGIN IMMEDIATE elsewhere.
        writer = engine.execution_options(jobledger_write=True)
        self._commands_tx = engine if self.is_postgres else writer
        if self.is_postgres:
            self._commands = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._commands = writer

    @contextlib.contextmanager
    def command(self, job_id: str) -> Iterator[Command]:
        """Load ``job_id`` and the database clock, for the caller to decide and write.

        On PostgreSQL the read and the (single-statement) write each run in
        autocommit; the write's version guard makes the gap between them safe.
        Elsewhere the whole cycle is one ``BEGIN IMMEDIATE`` transaction, so a
        refusal raised by the caller rolls back everything.
        """
        with translated_errors(self.engine), self._commands.connect() as conn:
            if self.is_postgres:
                yield Command(self, conn, *self._load(conn, job_id))
                return
            with conn.begin():
                yield Command(self, conn, *self._load(conn, job_id))

    def _load(self, conn: Connection, job_id: str) -> tuple[JobStatus | None, datetime]:
        row = conn.execute(self._sql.load, {"job_id": job_id}).one()
        status = status_from_row(row) if row.job_id is not None else None
        return status, row.now

    def _append(
        self, conn: Connection, expected: int, event: Event, status: JobStatus
    ) -> int | None:
        try:
            if self.is_postgres:
                params = {"expected": expected, **status_values(status, "j_")}
                params.update(event_values(event, "e_"))
                return conn.execute(self._sql.pg_append, params).scalar_one_or_none()
            moved = conn.execute(
                self._sql.guarded_update, {"expected": expected, **status_values(status, "j_")}
            )
            if moved.rowcount != 1:
                return None
            position: int = conn.execute(self._sql.insert_event, event_values(event)).scalar_one()
            return position
        except sa_exc.IntegrityError:
            return None  # UNIQUE(job_id, version): the guard's backstop

    def _create(self, conn: Connection, event: Event, status: JobStatus) -> int | None:
        try:
            if self.is_postgres:
                params = {**status_values(status, "j_"), **event_values(event, "e_")}
                return conn.execute(self._sql.pg_create, params).scalar_one_or_none()
            conn.execute(self._sql.insert_status, status_values(status))
            position: int = conn.execute(self._sql.insert_event, event_values(event)).scalar_one()
            return position
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
        with translated_errors(self.engine), self._commands_tx.connect() as conn:
            try:
                with conn.begin():
                    pairs = jobs_and_events(self._now(conn))
                    conn.execute(self._sql.insert_status, [status_values(s) for _, s in pairs])
                    conn.execute(self._sql.insert_events_many, [event_values(e) for e, _ in pairs])
            except sa_exc.IntegrityError:
                return self.existing([e.job_id for e, _ in pairs])
        return []

    def _now(self, conn: Connection) -> datetime:
        moment: datetime = conn.execute(self._sql.clock).scalar_one()
        return moment

    def existing(self, job_ids: Sequence[str]) -> list[str]:
        query = select(jobs.c.job_id).where(jobs.c.job_id.in_(job_ids))
        with translated_errors(self.engine), self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

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
