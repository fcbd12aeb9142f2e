"""Fill ledgers quickly with realistic, correctly chained histories (for benchmarks).

The histories are what the Ledger itself would write (every hash is the real
chain hash, every projection row is the fold of its events, payloads and
times stored as the ledger stores them) but they are inserted in bulk, into
several databases from one generation: COPY on PostgreSQL, executemany on a
bare sqlite3 connection. Writing a million events through the Ledger's
one-transaction-per-command path would take far longer than the audits being
measured.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine

from jobledger.audit.bulk import INSTANTS
from jobledger.chain import GENESIS, event_hash
from jobledger.projection import fold_all
from jobledger.records import Event, JobStatus
from jobledger.schema import EVENT_FIELDS, STATUS_FIELDS, events, jobs

#: Life stories the generated jobs cycle through (average 4.3 events per job).
STORIES: tuple[tuple[str, ...], ...] = (
    ("enqueued", "claimed", "heartbeat", "completed"),
    ("enqueued", "claimed", "failed", "requeued", "claimed", "completed"),
    ("enqueued", "cancelled"),
    ("enqueued", "claimed", "heartbeat", "heartbeat", "released", "claimed", "completed"),
    ("enqueued",),
    ("enqueued", "claimed", "abandoned", "requeued", "claimed", "heartbeat"),
    ("enqueued", "claimed", "heartbeat", "completed"),
)
QUEUES = ("default", "mail", "reports")
PROCESSES = tuple(f"bench-{n}:{4000 + n}:{n:08x}" for n in range(8))
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: Jobs per insert batch.
CHUNK = 5_000


#: Jobs with their events and their projection row.
Batch = list[tuple[list[Event], JobStatus]]


def histories(count: int) -> Iterator[tuple[list[Event], JobStatus]]:
    """Jobs with their events, ``count`` events in all."""
    made, number = 0, 0
    while made < count:
        story = STORIES[number % len(STORIES)][: count - made]
        job_events = _history(number, story)
        status = fold_all(job_events)
        assert status is not None
        yield job_events, status
        made += len(story)
        number += 1


def _history(number: int, story: tuple[str, ...]) -> list[Event]:
    process = PROCESSES[number % len(PROCESSES)]
    start = START + timedelta(seconds=number)
    moments, moment = [], start
    for version in range(1, len(story) + 1):
        moment += timedelta(milliseconds=250 + 37 * version)
        moments.append(moment)
    queue = QUEUES[number % len(QUEUES)]
    return chained_history(f"job-{number:08d}", story, process, moments, queue, number)


def chained_history(
    job_id: str,
    story: Sequence[str],
    actor: str,
    moments: Sequence[datetime],
    queue: str,
    number: int,
) -> list[Event]:
    """The events of ``story`` at ``moments``, hash-chained from genesis as the ledger chains
    them; ``actor`` holds every claim. ``number`` varies the payloads from job to job."""
    prev_hash, attempt, token, result = GENESIS, 0, 0, []
    for version, (kind, moment) in enumerate(zip(story, moments, strict=True), start=1):
        if kind == "claimed":
            attempt, token = attempt + 1, version
        data = _data(kind, queue, number, attempt, token, actor)
        process = None if kind in ("enqueued", "requeued", "cancelled") else actor
        digest = event_hash(prev_hash, job_id, version, kind, process, data, moment)
        result.append(Event(-1, job_id, version, kind, process, data, moment, prev_hash, digest))
        prev_hash = digest
    return result


def _data(kind: str, queue: str, number: int, attempt: int, token: int, actor: str) -> Any:
    if kind == "enqueued":
        return {"queue": queue, "data": {"n": number}}
    if kind == "claimed":
        return {"attempt": attempt}
    if kind == "heartbeat":
        return {"progress": {"done": number % 100}}
    if kind == "completed":
        return {"result": {"ok": True}}
    if kind == "failed":
        return {"error": "boom"}
    if kind == "abandoned":
        return {"token": token, "holder": actor, "reason": "holder vanished"}
    return {"reason": None}


def populate(engines: Sequence[Engine], count: int) -> int:
    """Insert ``count`` events, and their jobs' projection rows, into every database.

    One transaction per database; returns the number of jobs.
    """
    total_jobs = 0
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(_writer(engine)) for engine in engines]
        batch: Batch = []
        for item in histories(count):
            batch.append(item)
            if len(batch) >= CHUNK:
                for write in writers:
                    write(batch)
                total_jobs += len(batch)
                batch = []
        for write in writers:
            write(batch)
        total_jobs += len(batch)
    return total_jobs


@contextlib.contextmanager
def _writer(engine: Engine) -> Iterator[Callable[[Batch], None]]:
    with engine.begin() as conn:
        raw: Any = conn.connection.driver_connection
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cursor:
                yield _postgres_writer(cursor)
        else:
            yield _sqlite_writer(raw)


def _postgres_writer(cursor: Any) -> Callable[[Batch], None]:
    """COPY into both tables; payloads go in as JSON text, which JSONB parses."""
    tx_id = cursor.execute("SELECT pg_current_xact_id()::text").fetchone()[0]

    def write(batch: Batch) -> None:
        columns = ", ".join(STATUS_FIELDS)
        with cursor.copy(f"COPY {jobs.name} ({columns}) FROM STDIN") as copy:
            for _, status in batch:
                copy.write_row([getattr(status, c) for c in STATUS_FIELDS])
        columns = ", ".join((*EVENT_FIELDS, "tx_id"))
        with cursor.copy(f"COPY {events.name} ({columns}) FROM STDIN") as copy:
            for job_events, _ in batch:
                for e in job_events:
                    copy.write_row(
                        (*_event_values(e, e.recorded_at), tx_id),
                    )

    return write


def _sqlite_writer(conn: Any) -> Callable[[Batch], None]:
    """executemany, with values as UtcDateTime and SQLAlchemy's JSON type store them."""

    def write(batch: Batch) -> None:
        marks = ", ".join("?" * len(STATUS_FIELDS))
        rows = [
            [
                _sqlite_time(value) if name in INSTANTS else value
                for name, value in ((c, getattr(status, c)) for c in STATUS_FIELDS)
            ]
            for _, status in batch
        ]
        conn.executemany(f"INSERT INTO {jobs.name} VALUES ({marks})", rows)
        columns = ", ".join(EVENT_FIELDS)
        marks = ", ".join("?" * len(EVENT_FIELDS))
        conn.executemany(
            f"INSERT INTO {events.name} ({columns}) VALUES ({marks})",
            [_event_values(e, _sqlite_time(e.recorded_at)) for es, _ in batch for e in es],
        )

    return write


def _event_values(event: Event, moment: Any) -> tuple[Any, ...]:
    return (
        event.job_id,
        event.version,
        event.type,
        event.process,
        json.dumps(event.data),
        moment,
        event.prev_hash,
        event.hash,
    )


def _sqlite_time(moment: datetime | None) -> str | None:
    """UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``, SQLAlchemy's SQLite storage format."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
