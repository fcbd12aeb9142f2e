"""Fill a ledger quickly with realistic, correctly chained histories (for benchmarks).

The histories are what the Ledger itself would write (every hash is the real
chain hash, every projection row is the fold of its events) but they are
inserted in bulk: COPY on PostgreSQL, executemany elsewhere. Writing a
million events through the Ledger's one-transaction-per-command path would
take far longer than the audits being measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, insert

from jobledger.chain import GENESIS, event_hash
from jobledger.projection import fold
from jobledger.records import Event, JobStatus
from jobledger.schema import events, jobs

#: Life stories the generated jobs cycle through (average 4.7 events per job).
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
CHUNK = 20_000

_EVENT_COLUMNS = (
    "job_id",
    "version",
    "type",
    "process",
    "data",
    "recorded_at",
    "prev_hash",
    "hash",
)
_JOB_COLUMNS = tuple(c.name for c in jobs.columns)


def histories(count: int) -> Iterator[tuple[list[Event], JobStatus]]:
    """Jobs with their events, ``count`` events in all."""
    made, number = 0, 0
    while made < count:
        story = STORIES[number % len(STORIES)][: count - made]
        job_events = _history(number, story)
        status = None
        for event in job_events:
            status = fold(status, event)
        assert status is not None
        yield job_events, status
        made += len(story)
        number += 1


def _history(number: int, story: tuple[str, ...]) -> list[Event]:
    job_id = f"job-{number:08d}"
    process = PROCESSES[number % len(PROCESSES)]
    moment = START + timedelta(seconds=number)
    prev_hash, attempt, token, result = GENESIS, 0, 0, []
    for version, kind in enumerate(story, start=1):
        moment += timedelta(milliseconds=250 + 37 * version)
        if kind == "claimed":
            attempt, token = attempt + 1, version
        data = _data(kind, number, attempt, token, process)
        actor = None if kind in ("enqueued", "requeued", "cancelled") else process
        digest = event_hash(prev_hash, job_id, version, kind, actor, data, moment)
        result.append(Event(-1, job_id, version, kind, actor, data, moment, prev_hash, digest))
        prev_hash = digest
    return result


def _data(kind: str, number: int, attempt: int, token: int, process: str) -> Any:
    if kind == "enqueued":
        return {"queue": QUEUES[number % len(QUEUES)], "data": {"n": number}}
    if kind == "claimed":
        return {"attempt": attempt}
    if kind == "heartbeat":
        return {"progress": {"done": number % 100}}
    if kind == "completed":
        return {"result": {"ok": True}}
    if kind == "failed":
        return {"error": "boom"}
    if kind == "abandoned":
        return {"token": token, "holder": process, "reason": "holder vanished"}
    return {"reason": None}


def populate(engine: Engine, count: int) -> int:
    """Insert ``count`` events (and their jobs' projection rows); returns the number of jobs."""
    batch: list[tuple[list[Event], JobStatus]] = []
    total_jobs = 0
    with engine.begin() as conn:
        for item in histories(count):
            batch.append(item)
            if len(batch) * 5 >= CHUNK:
                _insert(conn, batch)
                total_jobs += len(batch)
                batch = []
        if batch:
            _insert(conn, batch)
            total_jobs += len(batch)
    return total_jobs


def _insert(conn: Connection, batch: list[tuple[list[Event], JobStatus]]) -> None:
    if conn.dialect.name == "postgresql":
        _copy(conn, batch)
        return
    conn.execute(
        insert(jobs), [{c: getattr(status, c) for c in _JOB_COLUMNS} for _, status in batch]
    )
    conn.execute(
        insert(events),
        [{c: getattr(e, c) for c in _EVENT_COLUMNS} for job_events, _ in batch for e in job_events],
    )


def _copy(conn: Connection, batch: list[tuple[list[Event], JobStatus]]) -> None:
    from psycopg.types.json import Jsonb

    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor:
        tx_id = cursor.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        columns = ", ".join(_JOB_COLUMNS)
        with cursor.copy(f"COPY jobledger_jobs ({columns}) FROM STDIN") as copy:
            for _, status in batch:
                copy.write_row([getattr(status, c) for c in _JOB_COLUMNS])
        columns = ", ".join((*_EVENT_COLUMNS, "tx_id"))
        with cursor.copy(f"COPY jobledger_events ({columns}) FROM STDIN") as copy:
            for job_events, _ in batch:
                for e in job_events:
                    copy.write_row(
                        (
                            *(getattr(e, c) for c in _EVENT_COLUMNS[:4]),
                            Jsonb(e.data),
                            e.recorded_at,
                            e.prev_hash,
                            e.hash,
                            tx_id,
                        )
                    )
