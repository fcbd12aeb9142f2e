"""Auditing the ledger: verify, point-in-time replay, rebuild and export.

Everything here streams, a job at a time, so a million events take the memory
of one batch. Folding uses :func:`jobledger.projection.advance`, the same
definition every append uses, which is why a rebuilt projection is identical to
the live one row for row.

verify and rebuild read through :mod:`jobledger.bulk` (COPY on PostgreSQL, bare
sqlite3 on SQLite) and, for large ledgers, in several processes, each taking a
range of job ids (:mod:`jobledger.shards`). replay and export read through
SQLAlchemy, events in ``(job_id, version)`` or ``position`` order.

Reads that must agree with each other (events and projection rows in
``verify``) run in one REPEATABLE READ transaction on PostgreSQL (whose
snapshot every worker imports) and one read transaction on SQLite, so
concurrent appends cannot make them disagree.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
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
    select,
    type_coerce,
)
from sqlalchemy.sql import Select

from . import shards
from .bulk import (
    INSTANTS,
    NUMBERS,
    PROJECTION_TAIL,
    Bulk,
    CoreBulk,
    PostgresBulk,
    Row,
    SqliteBulk,
    parse_moment,
    prepare_postgres_session,
)
from .chain import GENESIS, chain_hash, encoded_chain_hash
from .database import translated_errors
from .encoding import StoredPayloads, canonical_string
from .errors import CorruptHistory
from .names import checked_lookup
from .projection import Draft, advance
from .records import JobStatus
from .schema import STATUS_FIELDS, UtcDateTime, events, jobs

#: Events per progress report, and jobs per batch of rows a rebuild writes.
BATCH_SIZE = 10_000
#: Problems kept in a report; the rest are only counted (a wholesale forgery
#: must not turn "verify a million events" into "hold a million messages").
MAX_PROBLEMS = 1000
#: Below this many events verify and rebuild work in one process: starting
#: workers (a process and a connection each) would cost more than it saves.
MIN_PARALLEL_EVENTS = 50_000
#: Workers by default: one per usable CPU, at most this many. Each is a process and
#: a database connection; an audit on a large host should not take a pool's worth
#: of connections from the server unasked (``workers=`` sets any number).
DEFAULT_MAX_WORKERS = 8

#: ``progress(done, total)``: events processed so far, and how many there are.
Progress = Callable[[int, int], None]


class StoredEvent(NamedTuple):
    """An event as replay reads it.

    The fields of :class:`~jobledger.records.Event`, as a tuple: replay streams
    millions of rows, and ``_make`` over a row costs a fraction of building the
    frozen dataclass that commands hand to callers.
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


# -- reading events for replay -----------------------------------------------------------


def _event_query(dialect: str) -> Select[Any]:
    """Every event column, in the order of :class:`StoredEvent`.

    PostgreSQL and SQLite hand over raw text where decoding it here is cheaper
    than the driver's or the column type's own decoding (see the ``_from_*``
    converters); other databases get the typed columns.
    """
    data: Any = events.c.data
    moment: Any = events.c.recorded_at
    if dialect == "postgresql":
        data = cast(events.c.data, Text)  # psycopg's JSONB loader costs twice json's decoder
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
    )


def _stored_events(conn: Connection, query: Select[Any]) -> Iterator[StoredEvent]:
    """Stream ``query`` (built on :func:`_event_query`) as :class:`StoredEvent` tuples."""
    rows = conn.execute(query, execution_options={"stream_results": True, "yield_per": BATCH_SIZE})
    return map(_CONVERTERS.get(conn.dialect.name, _make), rows)


_make = StoredEvent._make
# json.loads minus its two Python-level wrappers, which only strip surrounding
# whitespace: JSONB's text output never has any.
_decode_jsonb = json.JSONDecoder().raw_decode


def _from_postgresql(row: Any) -> StoredEvent:
    return _make((*row[:5], _decode_jsonb(row[5])[0], *row[6:]))


def _from_sqlite(row: Any) -> StoredEvent:
    moment = datetime.fromisoformat(row[6]).replace(tzinfo=timezone.utc)  # stored as UTC
    try:
        data = json.loads(row[5])
    except ValueError:
        # Only an edit behind the ledger's back stores text that is not JSON; kept as
        # a string, the fold of an event that needs its data reports CorruptHistory.
        data = row[5]
    return _make((*row[:5], data, moment, row[7], row[8]))


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


def verify(
    engine: Engine, progress: Progress | None = None, workers: int | None = None
) -> VerifyReport:
    """Check every history and the projection; a report listing what is wrong.

    For each job, in ``(job_id, version)`` order: each event's hash is
    recomputed, versions run 1, 2, 3 ... without gaps, each ``prev_hash`` is the
    previous event's hash (``GENESIS`` for the first), every event is a legal
    move from the state before it, and the projection row equals the fold of
    the events. Projection rows without events are reported too.

    Problems are listed in job order, a job's events' problems before its
    projection row's. Above :data:`MIN_PARALLEL_EVENTS` events the jobs are split
    by ranges of ids over ``workers`` processes (default: one per CPU, up to 8), which on
    PostgreSQL all read the snapshot of this call's transaction; the report is
    the same however the work was split.
    """
    with _snapshot(engine) as conn:
        bulk = _bulk(conn)
        total = _count_events(conn)
        tracker = _Tracker(progress, total)
        task = functools.partial(_verify_range, batch_size=BATCH_SIZE)
        plan = _plan(conn, total, workers)
        reports = shards.run(task, *plan, tracker.handle) if plan is not None else None
        if reports is None:
            reports = [task(bulk, None, None, tracker.handle)]
    tracker.finish()
    return _merged(reports)


class _Event(NamedTuple):
    """A stored event as folding reads it: ``recorded_at`` is the backend's moment text."""

    job_id: str
    version: int
    type: str
    process: str | None
    data: Any
    recorded_at: Any
    prev_hash: str
    hash: str


def _verify_range(  # noqa: PLR0915 (one frame on purpose, see below)
    bulk: Bulk, lower: str | None, upper: str | None, emit: shards.Emit, *, batch_size: int
) -> VerifyReport:
    """Verify the jobs with ``lower < job_id <= upper`` (see :func:`verify`).

    One loop over the merged stream of events and projection rows, with the
    job's state in local variables: this runs once per event, and every
    function call or attribute lookup saved here is measurable.
    """
    report = VerifyReport()
    add = report.add
    encoded = StoredPayloads().encoded
    canonical = bulk.canonical_time
    quoted: dict[str, str] = {}  # JSON literals of event types and processes
    make = tuple.__new__
    job_id: Any = None  # the job being checked (None before the first row)
    job_json = ""
    draft: Draft | None = None
    projected: Row | None = None
    broken = False
    expected_version, expected_prev = 1, GENESIS
    events = first = ticked = 0  # events so far; at the job's start; at the last progress
    for row in bulk.rows(lower, upper, projection=True):
        if row[0] != job_id:
            if job_id is not None:
                _finish_job(report, job_id, events - first, None if broken else draft, projected)
            job_id, job_json, draft, projected = row[0], canonical_string(row[0]), None, None
            broken, expected_version, expected_prev, first = False, 1, GENESIS, events
            if events - ticked >= batch_size:
                emit("progress", events - ticked)
                ticked = events
        version, kind = row[1], row[2]
        if kind is None:  # the job's projection row, compared once its events are folded
            projected = row
            report.projection_rows += 1
            continue
        events += 1
        process, data, moment, prev_hash, stored_hash = row[3:8]
        data_json, value = encoded(data)
        recomputed = encoded_chain_hash(
            prev_hash,
            job_json,
            version,
            quoted.get(kind) or _quote(quoted, kind),
            "null" if process is None else quoted.get(process) or _quote(quoted, process),
            data_json,
            canonical(moment),
        )
        if recomputed != stored_hash:
            add(job_id, version, BAD_HASH)
        if version != expected_version:
            add(job_id, version, _gap(expected_version))
            broken = True
        elif prev_hash != expected_prev:
            previous = "GENESIS" if version == 1 else f"version {version - 1}'s hash"
            add(job_id, version, _broken(previous))
            broken = True
        expected_version, expected_prev = version + 1, stored_hash
        if broken:
            continue
        event = make(
            _Event, (job_id, version, kind, process, value, moment, prev_hash, stored_hash)
        )
        try:
            draft = advance(draft, event)
        except CorruptHistory as exc:
            add(job_id, version, exc.reason)
            broken = True
    if job_id is not None:
        _finish_job(report, job_id, events - first, None if broken else draft, projected)
    report.events = events
    emit("progress", events - ticked)
    return report


#: Problems verify and verify_export both find, worded once.
BAD_HASH = "stored hash does not match the event's contents"


def _gap(expected: int) -> str:
    return f"expected version {expected}: events are missing or out of order"


def _broken(previous: str) -> str:
    return f"prev_hash is not {previous}: the chain is broken"


def _quote(quoted: dict[str, str], text: str) -> str:
    """``text`` as a JSON string literal, remembered (event types and processes repeat)."""
    if len(quoted) >= 4096:
        quoted.clear()
    literal = quoted[text] = canonical_string(text)
    return literal


def _finish_job(
    report: VerifyReport, job_id: str, events: int, folded: Draft | None, projected: Row | None
) -> None:
    """Compare a job's fold (``None``: its history is broken) with its projection row."""
    if events == 0:
        assert projected is not None  # a job without events only shows as a projection row
        report.add(job_id, projected[1], "projection row has no events")
        return
    report.jobs += 1
    if projected is None:
        version = folded.version if folded is not None else None
        report.add(job_id, version, "job has events but no projection row")
    elif folded is not None and (
        projected[1] != folded.version or tuple(projected[3:15]) != _projected_text(folded)
    ):
        _compare_row(projected, folded, report)


def _projected_text(draft: Draft) -> tuple[Any, ...]:
    """A fold as a projection row reads in the stream (``row[3:]``): numbers as text."""
    token = draft.claim_token
    return (
        draft.queue,
        draft.state,
        str(draft.attempt),
        draft.claimed_by,
        None if token is None else str(token),
        draft.enqueued_at,
        draft.claimed_at,
        draft.heartbeat_at,
        draft.finished_at,
        draft.updated_at,
        draft.last_error,
        draft.last_hash,
    )


def _compare_row(stored: Row, folded: Draft, report: VerifyReport) -> None:
    """Report the columns in which a projection row differs from the fold, as values.

    Texts that differ may still be one value (an instant written two ways by
    two writers, say); only values that differ are reported.
    """
    tail = dict(zip(PROJECTION_TAIL, stored[3:15], strict=True))
    row = {"job_id": stored[0], "version": stored[1], **tail}
    differences = []
    for name in STATUS_FIELDS:
        theirs, ours = _value(name, row[name]), _value(name, getattr(folded, name))
        if theirs != ours:
            differences.append(f"{name} is {theirs!r}, events say {ours!r}")
    if differences:
        report.add(
            stored[0],
            folded.version,
            "projection row differs from the fold of its events: " + "; ".join(differences),
        )


def _value(name: str, value: Any) -> Any:
    """A projection column's value from its text in the stream."""
    if not isinstance(value, str):
        return value
    if name in NUMBERS and value.lstrip("-").isdigit():
        return int(value)
    if name in INSTANTS:
        return parse_moment(value) or value
    return value


def _merged(reports: list[VerifyReport]) -> VerifyReport:
    """One report of the shards' reports, in shard (job) order."""
    merged = VerifyReport()
    for part in reports:
        merged.jobs += part.jobs
        merged.events += part.events
        merged.projection_rows += part.projection_rows
        merged.problem_count += part.problem_count
        room = MAX_PROBLEMS - len(merged.problems)
        merged.problems += part.problems[:room]
    return merged


# -- running on shards ------------------------------------------------------------------


def _bulk(conn: Connection) -> Bulk:
    """Bulk access through ``conn``'s own transaction."""
    driver: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        with driver.cursor() as cursor:
            prepare_postgres_session(cursor)
        return PostgresBulk(driver)
    if conn.dialect.name == "sqlite":
        return SqliteBulk(driver)
    return CoreBulk(conn)


def default_workers() -> int:
    """One per CPU this process may run on (a container's cpuset), up to the cap."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(usable or 1, DEFAULT_MAX_WORKERS))


def _plan(
    conn: Connection, total: int, workers: int | None
) -> tuple[shards.Source, list[shards.Range], int] | None:
    """How workers connect, their ranges, how many workers; ``None``: work in this process.

    Workers take :data:`MIN_PARALLEL_EVENTS` events or more, when they can be
    forked (:func:`shards.can_fork`) and reach the database
    (:func:`shards.source_for`). On PostgreSQL this exports the transaction's
    snapshot, so it must run before the connection starts a COPY.
    """
    count = default_workers() if workers is None else workers
    if count < 2 or total < MIN_PARALLEL_EVENTS or not shards.can_fork():
        return None
    source = shards.source_for(conn)
    if source is None:
        return None
    ranges = shards.plan(conn, total, count * shards.RANGES_PER_WORKER)
    return (source, ranges, count) if len(ranges) > 1 else None


class _Tracker:
    """Sums the progress workers report, for the caller's ``progress(done, total)``."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def handle(self, kind: str, payload: Any) -> None:
        if kind == "progress":
            self.add(payload)

    def add(self, events: int) -> None:
        self.done += events
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.done)


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
    query = _event_query(engine.dialect.name)
    if until is not None:
        query = query.where(events.c.recorded_at <= type_coerce(_in_utc(until), UtcDateTime))
    if job_id is not None:
        query = query.where(events.c.job_id == checked_lookup(job_id))
    with _snapshot(engine) as conn:
        for _, job_events in _by_job(conn, query):
            yield _fold(job_events)


def _in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC, or the end of the calendar it lies past (as seen from UTC).

    ``9999-12-31T23:59:59-01:00`` is later than any UTC datetime, so it means "every event".
    """
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        end = datetime.max if moment.year == datetime.max.year else datetime.min
        return end.replace(tzinfo=timezone.utc)


def _fold(job_events: Iterable[StoredEvent]) -> Draft:
    draft: Draft | None = None
    for event in job_events:
        draft = advance(draft, event)
    assert draft is not None  # groupby never yields an empty group
    return draft


def rebuild(engine: Engine, progress: Progress | None = None, workers: int | None = None) -> int:
    """Replace the projection with the fold of all events; the number of jobs.

    One transaction: readers see the old projection until the new one is
    complete. On PostgreSQL the jobs table is locked against writers (every
    append updates or inserts a jobs row first, so appends wait; readers do
    not); on SQLite the transaction holds the write lock. ``CorruptHistory``
    (and nothing changed) if a history cannot be folded.

    Like :func:`verify`, large ledgers are folded in ``workers`` processes;
    their rows are all written by this one transaction.
    """
    writer = engine.execution_options(jobledger_write=True)  # BEGIN IMMEDIATE on SQLite
    with translated_errors(engine), writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE jobledger_jobs IN SHARE ROW EXCLUSIVE MODE")
        _utc_session(conn)
        bulk = _bulk(conn)
        total = _count_events(conn)
        tracker = _Tracker(progress, total)
        task = functools.partial(_fold_range, batch_size=BATCH_SIZE)
        plan = _plan(conn, total, workers)
        # PostgreSQL cannot read one COPY and write another on one connection: without
        # workers, the events are read on a second one, in this transaction's snapshot.
        reader = None
        if isinstance(bulk, PostgresBulk):
            reader = plan[0] if plan is not None else shards.source_for(conn)
        conn.execute(delete(jobs))
        written = 0
        with bulk.writer() as write:

            def handle(kind: str, payload: Any) -> None:
                nonlocal written
                if kind == "batch":
                    batch, events, count = payload
                    write(batch)
                    written += count
                    tracker.add(events)

            if plan is None or shards.run(task, *plan, handle) is None:
                with reader.open() if reader is not None else contextlib.nullcontext(bulk) as read:
                    task(read, None, None, handle)
    tracker.finish()
    return written


def _fold_range(
    bulk: Bulk, lower: str | None, upper: str | None, emit: shards.Emit, *, batch_size: int
) -> None:
    """Fold the jobs with ``lower < job_id <= upper``, emitting batches of projection rows.

    Each ``("batch", (rows, events, jobs))`` holds rows in the form
    ``bulk.writer()`` takes; ``CorruptHistory`` if a history cannot be folded.
    """
    value = StoredPayloads().value
    make = tuple.__new__
    drafts: list[Draft] = []
    draft: Draft | None = None
    current = None
    for job_id, version, kind, process, data, moment, prev_hash, stored_hash in bulk.rows(
        lower, upper, projection=False
    ):
        if job_id != current:
            if draft is not None:
                drafts.append(draft)
                if len(drafts) >= batch_size:
                    _emit_batch(bulk, drafts, emit)
            current, draft = job_id, None
        event = make(
            _Event, (job_id, version, kind, process, value(data), moment, prev_hash, stored_hash)
        )
        draft = advance(draft, event)
    if draft is not None:
        drafts.append(draft)
    _emit_batch(bulk, drafts, emit)


def _emit_batch(bulk: Bulk, drafts: list[Draft], emit: shards.Emit) -> None:
    """Send folded jobs on as a batch of rows (with their event count); empties ``drafts``."""
    if drafts:
        # A fold's version is its number of events: versions run 1, 2, 3 ... or it failed.
        emit("batch", (bulk.encode(drafts), sum(d.version for d in drafts), len(drafts)))
        drafts.clear()


# -- export -----------------------------------------------------------------------------


def export(
    engine: Engine, out: TextIO, since: int | None = None, progress: Progress | None = None
) -> int:
    """Write events after position ``since`` (all if ``None``) as JSON lines; how many.

    Each line is one event with its position, hashes and canonical timestamp,
    enough to check the chain without the database (:func:`verify_export`):
    canonical JSON (keys sorted, no whitespace), newline included.
    """
    written = 0
    with _snapshot(engine) as conn:
        bulk = _bulk(conn)
        total = _count_events(conn, since) if progress is not None else 0
        encoded = StoredPayloads().encoded
        canonical = bulk.canonical_time
        quoted: dict[str, str] = {}
        write = out.write
        for row in bulk.by_position(since):
            job_id, version, kind, process, data, moment, prev_hash, hash_, position = row
            type_json = quoted.get(kind) or _quote(quoted, kind)
            process_json = "null"
            if process is not None:
                process_json = quoted.get(process) or _quote(quoted, process)
            write(
                f'{{"data":{encoded(data)[0]},"hash":"{hash_}",'
                f'"job_id":{canonical_string(job_id)},"position":{int(position):d},'
                f'"prev_hash":"{prev_hash}","process":{process_json},'
                f'"recorded_at":"{canonical(moment)}","type":{type_json},"version":{version:d}}}\n'
            )
            written += 1
            if progress is not None and written % BATCH_SIZE == 0:
                progress(written, total)
    if progress is not None:
        progress(written, written)
    return written


#: The keys of every exported line.
EXPORT_KEYS = frozenset(
    ("data", "hash", "job_id", "position", "prev_hash", "process", "recorded_at", "type", "version")
)


def verify_export(lines: Iterable[str | bytes]) -> VerifyReport:
    """Check an exported file without a database: every hash, and every job's chain.

    ``lines`` are text, or bytes of UTF-8 text (a file opened in binary mode: a line
    that is not UTF-8 is then one problem, not the end of the check). A line that
    is no event of the expected shape and types is reported and skipped.

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
        try:
            recomputed = chain_hash(
                record["prev_hash"],
                job_id,
                version,
                record["type"],
                record["process"],
                record["data"],
                record["recorded_at"],
            )
        except RecursionError:  # data nested deeper than any ledger stores: not its event
            recomputed = None
        if recomputed != record["hash"]:
            report.add(job_id, version, BAD_HASH)
        _check_link(heads.get(job_id), record, report)
        heads[job_id] = (version, record["hash"])
    report.jobs = len(heads)
    return report


def _parse_line(line: str | bytes, number: int, report: VerifyReport) -> dict[str, Any] | None:
    """The event on ``line``, or ``None`` after reporting why it is none."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        report.add("?", None, f"line {number} is not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to read
        report.add("?", None, f"line {number} is not JSON ({exc})")
        return None
    if not isinstance(record, dict) or set(record) != EXPORT_KEYS:
        report.add("?", None, f"line {number} is not an exported event")
        return None
    job_id = record["job_id"] if isinstance(record["job_id"], str) else "?"
    for key, wanted, fits in _FIELD_TYPES:
        if not fits(record[key]):
            report.add(job_id, None, f"line {number}: {key} must be {wanted}, not {record[key]!r}")
            return None
    return record


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not float (1.5, or 1.0 of another exporter)


#: What each exported field must hold: (key, what it must be, check).
_FIELD_TYPES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("job_id", "a string", lambda v: isinstance(v, str)),
    ("version", "an integer of at least 1", lambda v: _is_int(v) and v >= 1),
    ("position", "an integer", _is_int),
    ("type", "a string", lambda v: isinstance(v, str)),
    ("process", "a string or null", lambda v: v is None or isinstance(v, str)),
    ("recorded_at", "a string", lambda v: isinstance(v, str)),
    ("prev_hash", "a string", lambda v: isinstance(v, str)),
    ("hash", "a string", lambda v: isinstance(v, str)),
)


def _check_link(head: tuple[int, str] | None, record: dict[str, Any], report: VerifyReport) -> None:
    job_id, version = record["job_id"], record["version"]
    if head is None:
        if version == 1 and record["prev_hash"] != GENESIS:
            report.add(job_id, version, _broken("GENESIS"))
        return
    previous_version, previous_hash = head
    if version != previous_version + 1:
        report.add(job_id, version, _gap(previous_version + 1))
    elif record["prev_hash"] != previous_hash:
        report.add(job_id, version, _broken(f"version {previous_version}'s hash"))
