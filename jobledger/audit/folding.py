"""Folding stored histories: point-in-time replay, state counts and rebuild.

Every fold uses :func:`jobledger.projection.advance`, the same definition every
append uses, which is why a rebuilt projection is identical to the live one row
for row. replay reads events through SQLAlchemy (:mod:`jobledger.audit.events`),
one job at a time, so a million events take the memory of one batch; rebuild
reads them in bulk (:mod:`jobledger.audit.bulk`), in workers for large ledgers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, delete, func, select, type_coerce

from ..database import translated_errors
from ..names import checked_lookup
from ..projection import Draft, advance
from ..records import JobStatus
from ..schema import UtcDateTime, events, jobs
from ..storage import backend_for
from . import session, shards
from .bulk import Bulk
from .events import StoredEvent, by_job, event_query
from .payloads import StoredPayloads


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
    query = event_query(backend_for(engine))
    if until is not None:
        query = query.where(events.c.recorded_at <= type_coerce(_in_utc(until), UtcDateTime))
    if job_id is not None:
        query = query.where(events.c.job_id == checked_lookup(job_id))
    with session.snapshot(engine) as conn:
        for _, job_events in by_job(conn, query):
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


def rebuild(
    engine: Engine, progress: session.Progress | None = None, workers: int | None = None
) -> int:
    """Replace the projection with the fold of all events; the number of jobs.

    One transaction: readers see the old projection until the new one is
    complete. On PostgreSQL the jobs table is locked against writers (every
    append updates or inserts a jobs row first, so appends wait; readers do
    not); on SQLite the transaction holds the write lock. ``CorruptHistory``
    (and nothing changed) if a history cannot be folded.

    Like :func:`verify`, large ledgers are folded in ``workers`` processes;
    their rows are all written by this one transaction.
    """
    backend = backend_for(engine)
    writer = engine.execution_options(jobledger_write=True)  # BEGIN IMMEDIATE on SQLite
    with translated_errors(engine), writer.begin() as conn:
        backend.lock_for_rebuild(conn)
        backend.utc_session(conn)
        bulk = session.bulk_for(conn)
        total = session.count_events(conn)
        tracker = session.Tracker(progress, total)
        task = functools.partial(_fold_range, batch_size=session.BATCH_SIZE)
        plan = session.worker_plan(conn, total, workers)
        # A bulk that cannot read while it writes (PostgreSQL's COPY): without workers,
        # the events are read on a second connection, in this transaction's snapshot.
        reader = None
        if not bulk.reads_while_writing:
            reader = plan[0] if plan is not None else session.worker_source(conn)
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
        event = tuple.__new__(
            StoredEvent,
            (None, job_id, version, kind, process, value(data), moment, prev_hash, stored_hash),
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
