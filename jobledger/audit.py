"""Auditing the ledger: verify, point-in-time replay, rebuild and export.

Everything here streams: events are read in ``(job_id, version)`` order (or
``position`` order for exports) through a server-side cursor, a job at a time,
so a million events take the memory of one batch. Folding uses
:func:`jobledger.projection.advance`, the same definition every append uses,
which is why a rebuilt projection is identical to the live one row for row.

Reads that must agree with each other (events and projection rows in
``verify``) run in one REPEATABLE READ transaction on PostgreSQL and one
read transaction on SQLite, so concurrent appends cannot make them disagree.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple, TextIO

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Text,
    cast,
    delete,
    func,
    insert,
    null,
    select,
    type_coerce,
)
from sqlalchemy.sql import Select

from .chain import GENESIS, chain_hash
from .database import translated_errors
from .encoding import canonical_json, canonical_string, canonical_time
from .errors import CorruptHistory
from .projection import Draft, advance
from .records import JobStatus
from .schema import UtcDateTime, events, jobs

#: Rows fetched per round trip, and jobs compared with the projection per query.
BATCH_SIZE = 10_000
#: Problems kept in a report; the rest are only counted (a wholesale forgery
#: must not turn "verify a million events" into "hold a million messages").
MAX_PROBLEMS = 1000

#: ``progress(done, total)``: events processed so far, and how many there are.
Progress = Callable[[int, int], None]

_STATUS_FIELDS = tuple(c.name for c in jobs.columns)
# PostgreSQL formats the canonical timestamp itself, for less than formatting a
# datetime in Python for every event costs.
_PG_CANONICAL_TIME = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


class StoredEvent(NamedTuple):
    """An event as read for auditing.

    ``recorded_text`` is its canonical timestamp, as hashed (``None`` where the
    event is read only to be folded).
    """

    position: int
    job_id: str
    version: int
    type: str
    process: str | None
    data: Any
    recorded_at: datetime
    prev_hash: str
    hash: str
    recorded_text: str | None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the stored history or the projection."""

    job_id: str
    version: int | None  # None when no event is to blame (e.g. an unparsable export line)
    message: str

    def __str__(self) -> str:
        where = f"job {self.job_id!r}"
        if self.version is not None:
            where += f" version {self.version}"
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``problems`` holds the first :data:`MAX_PROBLEMS`."""

    jobs: int = 0
    events: int = 0
    projection_rows: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, job_id: str, version: int | None, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(job_id, version, message))


# -- reading events ---------------------------------------------------------------------


def _event_query(dialect: str, hashing: bool = True) -> Select[Any]:
    """Every event column plus its canonical timestamp, in the order of :class:`StoredEvent`.

    PostgreSQL and SQLite hand over raw text where decoding it here is cheaper
    than the driver's or the column type's own decoding (see the ``_from_*``
    converters); other databases get the typed columns. Without ``hashing``
    (folding only) PostgreSQL is spared formatting the canonical timestamps.
    """
    data: Any = events.c.data
    moment: Any = events.c.recorded_at
    text: Any = null()  # computed in Python from recorded_at
    if dialect == "postgresql":
        data = cast(events.c.data, Text)  # psycopg's JSONB loader costs twice json's decoder
        if hashing:
            utc = func.timezone("UTC", events.c.recorded_at)
            text = func.to_char(utc, _PG_CANONICAL_TIME)
        moment = type_coerce(events.c.recorded_at, DateTime(timezone=True))  # see _utc_session
    elif dialect == "sqlite":
        data = type_coerce(events.c.data, Text)
        moment = type_coerce(events.c.recorded_at, Text)
    return select(
        events.c.position,
        events.c.job_id,
        events.c.version,
        events.c.type,
        events.c.process,
        data.label("data"),
        moment.label("recorded_at"),
        events.c.prev_hash,
        events.c.hash,
        text.label("recorded_text"),
    )


def _stored_events(conn: Connection, query: Select[Any]) -> Iterator[StoredEvent]:
    """Stream ``query`` (built on :func:`_event_query`) as :class:`StoredEvent` tuples."""
    rows = conn.execute(query, execution_options={"stream_results": True, "yield_per": BATCH_SIZE})
    return map(_CONVERTERS.get(conn.dialect.name, _from_typed_row), rows)


_make = StoredEvent._make
# json.loads minus its two Python-level wrappers, which only strip surrounding
# whitespace: JSONB's text output never has any.
_decode_jsonb = json.JSONDecoder().raw_decode


def _from_postgresql(row: Any) -> StoredEvent:
    return _make((*row[:5], _decode_jsonb(row[5])[0], *row[6:9], row[9]))


def _from_sqlite(row: Any) -> StoredEvent:
    stored = row[6]  # UtcDateTime stores UTC as "YYYY-MM-DD HH:MM:SS.ffffff"
    moment = datetime.fromisoformat(stored).replace(tzinfo=timezone.utc)
    if len(stored) == 26 and stored[10] == " ":
        text = f"{stored[:10]}T{stored[11:]}Z"
    else:
        text = canonical_time(moment)
    try:
        data = json.loads(row[5])
    except ValueError:
        # Only an edit behind the ledger's back stores text that is not JSON. Kept as
        # a string, it fails its hash check, and verify reports it instead of stopping.
        data = row[5]
    return _make((*row[:5], data, moment, row[7], row[8], text))


def _from_typed_row(row: Any) -> StoredEvent:
    return _make((*row[:9], canonical_time(row[6])))


_CONVERTERS: dict[str, Callable[[Any], StoredEvent]] = {
    "postgresql": _from_postgresql,
    "sqlite": _from_sqlite,
}


def _by_job(conn: Connection, query: Select[Any]) -> Iterator[tuple[str, Iterator[StoredEvent]]]:
    ordered = query.order_by(events.c.job_id, events.c.version)
    return itertools.groupby(_stored_events(conn, ordered), key=_job_id)


def _job_id(event: StoredEvent) -> str:
    return event.job_id


def _count_events(conn: Connection, since: int | None = None) -> int:
    query = select(func.count()).select_from(events)
    if since is not None:
        query = query.where(events.c.position > since)
    total: int = conn.execute(query).scalar_one()
    return total


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A transaction whose reads all see one consistent state of the database."""
    with translated_errors(engine), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():  # SQLite: one BEGIN .. COMMIT sees one WAL snapshot
            _utc_session(conn)
            yield conn


def _utc_session(conn: Connection) -> None:
    """Make PostgreSQL hand out timestamps in ``timezone.utc`` for this transaction.

    That is what :class:`~jobledger.schema.UtcDateTime` returns, so event times
    can be read as plain timestamps, skipping a Python call per value.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")


# -- verify -----------------------------------------------------------------------------


def verify(engine: Engine, progress: Progress | None = None) -> VerifyReport:
    """Check every history and the projection; a report listing what is wrong.

    For each job, in ``(job_id, version)`` order: each event's hash is
    recomputed, versions run 1, 2, 3 ... without gaps, each ``prev_hash`` is the
    previous event's hash (``GENESIS`` for the first), every event is a legal
    move from the state before it, and the projection row equals the fold of
    the events. Projection rows without events are reported too.
    """
    report = VerifyReport()
    with _snapshot(engine) as conn:
        total = _count_events(conn) if progress is not None else 0
        checker = _ProjectionChecker(conn, report)
        for job_id, job_events in _by_job(conn, _event_query(conn.dialect.name)):
            report.jobs += 1
            checker.add(job_id, _check_history(job_events, report))
            if checker.full():
                checker.flush()
                if progress is not None:
                    progress(report.events, total)
        checker.finish()
    if progress is not None:
        progress(report.events, report.events)
    return report


def _check_history(job_events: Iterable[StoredEvent], report: VerifyReport) -> Draft | None:
    """Check one job's events; their fold, or ``None`` if the history is broken."""
    draft: Draft | None = None
    broken = False
    expected_version, expected_prev = 1, GENESIS
    for event in job_events:
        report.events += 1
        job_id, version = event.job_id, event.version
        recomputed = chain_hash(
            event.prev_hash,
            job_id,
            version,
            event.type,
            event.process,
            event.data,
            event.recorded_text or canonical_time(event.recorded_at),
        )
        if recomputed != event.hash:
            report.add(job_id, version, "stored hash does not match the event's contents")
        if version != expected_version:
            report.add(
                job_id,
                version,
                f"expected version {expected_version}: events are missing or out of order",
            )
            broken = True
        elif event.prev_hash != expected_prev:
            previous = "GENESIS" if version == 1 else f"version {version - 1}'s hash"
            report.add(job_id, version, f"prev_hash is not {previous}: the chain is broken")
            broken = True
        expected_version, expected_prev = version + 1, event.hash
        if broken:
            continue
        try:
            draft = advance(draft, event)
        except CorruptHistory as exc:
            report.add(job_id, version, _reason(exc))
            broken = True
    return None if broken else draft


def _reason(exc: CorruptHistory) -> str:
    """The message without its "job 'x' version n: " prefix (a Problem names both)."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("job ") and ": " in text else text


class _ProjectionChecker:
    """Compares folds with projection rows, a batch of jobs per range query.

    Jobs arrive in the database's own ``job_id`` order, so each batch's rows are
    exactly those with ``previous last < job_id <= this last`` in that order;
    comparing by range (rather than by list of ids) also finds the projection
    rows that have no events at all.
    """

    def __init__(self, conn: Connection, report: VerifyReport) -> None:
        self._conn, self._report = conn, report
        self._pending: dict[str, Draft | None] = {}
        self._last: str | None = None  # upper bound (inclusive) of the rows compared so far

    def add(self, job_id: str, folded: Draft | None) -> None:
        self._pending[job_id] = folded

    def full(self) -> bool:
        return len(self._pending) >= BATCH_SIZE

    def flush(self) -> None:
        if not self._pending:
            return
        upper = next(reversed(self._pending))
        self._compare(self._rows(upper))
        self._last = upper

    def finish(self) -> None:
        self.flush()
        self._compare(self._rows(None))

    def _rows(self, upper: str | None) -> Iterator[Any]:
        query = _jobs_query(self._conn.dialect.name)
        if self._last is not None:
            query = query.where(jobs.c.job_id > self._last)
        if upper is not None:
            query = query.where(jobs.c.job_id <= upper)
        return iter(self._conn.execute(query))

    def _compare(self, rows: Iterator[Any]) -> None:
        report, pending = self._report, self._pending
        for row in rows:
            report.projection_rows += 1
            if row.job_id not in pending:
                report.add(row.job_id, row.version, "projection row has no events")
                continue
            folded = pending.pop(row.job_id)
            if folded is not None:
                _compare_row(row, folded, report)
        for job_id, folded in pending.items():
            version = folded.version if folded is not None else None
            report.add(job_id, version, "job has events but no projection row")
        pending.clear()


def _jobs_query(dialect: str) -> Select[Any]:
    """The projection's rows; on PostgreSQL with plain timestamps (see :func:`_utc_session`)."""
    if dialect != "postgresql":
        return select(jobs)
    return select(
        *(
            type_coerce(c, DateTime(timezone=True)).label(c.name)
            if isinstance(c.type, UtcDateTime)
            else c
            for c in jobs.columns
        )
    )


_folded_values = operator.attrgetter(*_STATUS_FIELDS)


def _compare_row(row: Any, folded: Draft, report: VerifyReport) -> None:
    if tuple(row) == _folded_values(folded):
        return
    differences = [
        f"{name} is {getattr(row, name)!r}, events say {getattr(folded, name)!r}"
        for name in _STATUS_FIELDS
        if getattr(row, name) != getattr(folded, name)
    ]
    report.add(
        row.job_id,
        folded.version,
        "projection row differs from the fold of its events: " + "; ".join(differences),
    )


# -- replay and rebuild -----------------------------------------------------------------


def replay(
    engine: Engine, until: datetime | None = None, job_id: str | None = None
) -> dict[str, JobStatus]:
    """Every job's status (or only ``job_id``'s) as of ``until`` (all events if ``None``).

    Only events recorded at or before ``until`` (database clock) count; the
    projection is not read or touched. ``CorruptHistory`` if a history cannot
    be folded.
    """
    return {draft.job_id: draft.freeze() for draft in _replayed(engine, until, job_id)}


def state_counts(engine: Engine, until: datetime | None = None) -> dict[str, int]:
    """How many jobs are in each state: now (from the projection) or replayed as of ``until``.

    Replaying folds one job at a time and keeps only the counts.
    """
    counts: dict[str, int] = {}
    if until is None:
        query = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        with translated_errors(engine), engine.connect() as conn:
            counts.update((state, count) for state, count in conn.execute(query))
    else:
        for draft in _replayed(engine, until):
            counts[draft.state] = counts.get(draft.state, 0) + 1
    return dict(sorted(counts.items()))


def _replayed(engine: Engine, until: datetime | None, job_id: str | None = None) -> Iterator[Draft]:
    if until is not None and until.tzinfo is None:
        raise ValueError("until must be timezone-aware (the ledger records UTC instants)")
    query = _event_query(engine.dialect.name, hashing=False)
    if until is not None:
        query = query.where(events.c.recorded_at <= type_coerce(until, UtcDateTime))
    if job_id is not None:
        query = query.where(events.c.job_id == job_id)
    with _snapshot(engine) as conn:
        for _, job_events in _by_job(conn, query):
            yield _fold(job_events)


def _fold(job_events: Iterable[StoredEvent]) -> Draft:
    draft: Draft | None = None
    for event in job_events:
        draft = advance(draft, event)
    assert draft is not None  # groupby never yields an empty group
    return draft


def rebuild(engine: Engine, progress: Progress | None = None) -> int:
    """Replace the projection with the fold of all events; the number of jobs.

    One transaction: readers see the old projection until the new one is
    complete. On PostgreSQL the jobs table is locked against writers (every
    append updates or inserts a jobs row first, so appends wait; readers do
    not); on SQLite the transaction holds the write lock. ``CorruptHistory``
    (and nothing changed) if a history cannot be folded.
    """
    writer = engine.execution_options(jobledger_write=True)  # BEGIN IMMEDIATE on SQLite
    count = done = 0
    with translated_errors(engine), writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE jobledger_jobs IN SHARE ROW EXCLUSIVE MODE")
        _utc_session(conn)
        total = _count_events(conn) if progress is not None else 0
        conn.execute(delete(jobs))
        batch: list[tuple[Any, ...]] = []
        for _, job_events in _by_job(conn, _event_query(conn.dialect.name, hashing=False)):
            draft = _fold(job_events)
            batch.append(_folded_values(draft))
            done += draft.version
            if len(batch) >= BATCH_SIZE:
                count += _insert_rows(conn, batch)
                if progress is not None:
                    progress(done, total)
        count += _insert_rows(conn, batch)
    if progress is not None:
        progress(total, total)
    return count


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert projection rows (values in column order); how many. Empties ``rows``."""
    written = len(rows)
    if not rows:
        return 0
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        # COPY: executemany spent several times more per row than folding it did.
        columns = ", ".join(_STATUS_FIELDS)
        driver: Any = conn.connection.driver_connection
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {jobs.name} ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
    else:
        conn.execute(insert(jobs), [dict(zip(_STATUS_FIELDS, row, strict=True)) for row in rows])
    rows.clear()
    return written


# -- export -----------------------------------------------------------------------------


def export(
    engine: Engine, out: TextIO, since: int | None = None, progress: Progress | None = None
) -> int:
    """Write events after position ``since`` (all if ``None``) as JSON lines; how many.

    Each line is one event with its position, hashes and canonical timestamp,
    enough to check the chain without the database (:func:`verify_export`).
    """
    written = 0
    with _snapshot(engine) as conn:
        total = _count_events(conn, since) if progress is not None else 0
        query = _event_query(conn.dialect.name).order_by(events.c.position)
        if since is not None:
            query = query.where(events.c.position > since)
        write = out.write
        for event in _stored_events(conn, query):
            write(export_line(event))
            written += 1
            if progress is not None and written % BATCH_SIZE == 0:
                progress(written, total)
    if progress is not None:
        progress(written, written)
    return written


def export_line(event: StoredEvent) -> str:
    """One event as a line of canonical JSON (keys sorted, no whitespace), newline included."""
    process = "null" if event.process is None else canonical_string(event.process)
    recorded = event.recorded_text or canonical_time(event.recorded_at)
    return (
        f'{{"data":{canonical_json(event.data)},"hash":"{event.hash}",'
        f'"job_id":{canonical_string(event.job_id)},"position":{event.position:d},'
        f'"prev_hash":"{event.prev_hash}","process":{process},'
        f'"recorded_at":"{recorded}","type":{canonical_string(event.type)},'
        f'"version":{event.version:d}}}\n'
    )


#: The keys of every exported line.
EXPORT_KEYS = frozenset(
    ("data", "hash", "job_id", "position", "prev_hash", "process", "recorded_at", "type", "version")
)


def verify_export(lines: Iterable[str]) -> VerifyReport:
    """Check an exported file without a database: every hash, and every job's chain.

    Memory grows with the number of jobs (one hash each), not events. A job
    whose first line has a version above 1 is taken to continue an earlier
    export (``--since``): its chain is checked from there on.
    """
    report = VerifyReport()
    heads: dict[str, tuple[int, str]] = {}  # job -> (version, hash) of its latest line
    last_position = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse_line(line, number, report)
        if record is None:
            continue
        report.events += 1
        job_id, version = record["job_id"], record["version"]
        if record["position"] <= last_position:
            report.add(job_id, version, f"line {number}: positions do not increase")
        last_position = record["position"]
        recomputed = chain_hash(
            record["prev_hash"],
            job_id,
            version,
            record["type"],
            record["process"],
            record["data"],
            record["recorded_at"],
        )
        if recomputed != record["hash"]:
            report.add(job_id, version, "stored hash does not match the event's contents")
        _check_link(heads.get(job_id), record, report)
        heads[job_id] = (version, record["hash"])
    report.jobs = len(heads)
    return report


def _parse_line(line: str, number: int, report: VerifyReport) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError as exc:
        report.add("?", None, f"line {number} is not JSON ({exc})")
        return None
    if not isinstance(record, dict) or set(record) != EXPORT_KEYS:
        report.add("?", None, f"line {number} is not an exported event")
        return None
    return record


def _check_link(head: tuple[int, str] | None, record: dict[str, Any], report: VerifyReport) -> None:
    job_id, version = record["job_id"], record["version"]
    if head is None:
        if version == 1 and record["prev_hash"] != GENESIS:
            report.add(job_id, version, "prev_hash is not GENESIS: the chain is broken")
        return
    previous_version, previous_hash = head
    if version != previous_version + 1:
        report.add(
            job_id,
            version,
            f"expected version {previous_version + 1}: events are missing or out of order",
        )
    elif record["prev_hash"] != previous_hash:
        report.add(
            job_id,
            version,
            f"prev_hash is not version {previous_version}'s hash: the chain is broken",
        )
