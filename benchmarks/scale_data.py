"""A 10M-event ledger with a real history, written in bulk (for benchmarks/scale.py).

Every event is what the Ledger would have written: its hash is the library's own
chain hash (:func:`jobledger.chain.event_hash`), each job's projection row is the
library's own fold of its events (:func:`jobledger.projection.fold_all`, the
function ``rebuild`` uses), and every event is sealed into the ledger-wide anchor
with the library's own link digest (:func:`jobledger.anchor.encoded_link_digest`)
in commit order, with the sealer's checkpoint left where a caught-up sealer
leaves it. So ``jobledger verify`` passes on the result.

Why not the Ledger's own writers: ``enqueue_many`` writes only first events
(~28k events/s), commands one event per round trip (~3k events/s with four
processes), and the sealer seals ~28k events/s: a 10M-event history would take
hours. COPY of rows computed by the same functions takes minutes, and the
result is indistinguishable to every reader and to the audit.

The rows go in chunks of :data:`JOBS_PER_CHUNK` jobs, one transaction each, so
the events carry ~100 different writer transaction ids (``pg_current_xact_id()``
of their chunk) as the catch-up's commit order expects; chunks commit in
position order, so the anchor's seal order is the position order. Within a
chunk the jobs' events are interleaved by time, as concurrent jobs' are.

The mix, per 100 jobs (5 events a job on average, so 2M jobs make 10M events):
50 claimed and in progress (held by ``holders`` identities, 20 jobs each at 1M
claims over 50k holders), 36 completed, 4 failed, 4 failed once then retried
and completed, 2 abandoned then requeued and completed, 2 released back to
their queue, 2 cancelled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from audit_data import chained_history

from jobledger.anchor import GENESIS as ANCHOR_GENESIS
from jobledger.anchor import NAME as ANCHOR_CHECKPOINT
from jobledger.anchor import encoded_link_digest
from jobledger.encoding import canonical_string
from jobledger.projection import fold_all
from jobledger.records import Event, JobStatus
from jobledger.schema import EVENT_FIELDS, STATUS_FIELDS, anchor, checkpoints, events, jobs

QUEUES = ("default", "mail", "reports", "billing", "media")
#: Identities that ran the finished jobs (they are gone now; they hold nothing).
FINISHED_BY = tuple(f"worker-{n % 40}:{20000 + n}:{n:016x}" for n in range(400))
JOBS_PER_CHUNK = 20_000
#: How far apart consecutive jobs were enqueued, and a job's events.
JOB_SPACING = timedelta(seconds=1)
EVENT_SPACING = timedelta(milliseconds=1700)

_CLAIMED = ("enqueued", "claimed", "heartbeat", "heartbeat", "heartbeat")
#: (share of every 100 jobs, story), in order; a job's story is picked by its number % 100.
STORIES: tuple[tuple[int, tuple[str, ...]], ...] = (
    (50, _CLAIMED),
    (36, ("enqueued", "claimed", "heartbeat", "heartbeat", "completed")),
    (4, ("enqueued", "claimed", "heartbeat", "heartbeat", "failed")),
    (4, ("enqueued", "claimed", "failed", "requeued", "claimed", "completed")),
    (2, ("enqueued", "claimed", "abandoned", "requeued", "claimed", "completed")),
    (2, ("enqueued", "claimed", "heartbeat", "heartbeat", "released")),
    (2, ("enqueued", "cancelled")),
)
_BY_NUMBER = [story for share, story in STORIES for _ in range(share)]
assert len(_BY_NUMBER) == 100


def job_id(number: int) -> str:
    return f"job-{number:08d}"


def claimed_share() -> float:
    return STORIES[0][0] / 100


@dataclass
class Sealing:
    """Where the anchor's chain and the positions stand between chunks."""

    position: int = 0
    digest: str = ANCHOR_GENESIS
    tx_id: int = 0


def history(number: int, start: datetime, holders: Sequence[str]) -> list[Event]:
    """Job ``number``'s events, chained; a claimed job's holder is one of ``holders``."""
    story = _BY_NUMBER[number % 100]
    ident = job_id(number)
    if story is _CLAIMED:
        claims = (number // 100) * STORIES[0][0] + number % 100
        actor = holders[claims % len(holders)]
    else:
        actor = FINISHED_BY[number % len(FINISHED_BY)]
    first = start + number * JOB_SPACING
    moments = [first + EVENT_SPACING * version for version in range(1, len(story) + 1)]
    queue = QUEUES[number % len(QUEUES)]
    return chained_history(ident, story, actor, moments, queue, number)


def build(
    libpq: str,
    jobs_count: int,
    holders: Sequence[str],
    start: datetime,
    say: Callable[[str], None],
) -> Sealing:
    """Write ``jobs_count`` jobs' events, projection rows and anchor links; then the
    sealer's checkpoint, the queue figures and statistics. Returns where sealing stands."""
    sealing = Sealing()
    began = time.monotonic()
    with psycopg.connect(libpq) as conn:
        conn.execute("SET synchronous_commit = off")  # a bulk fill: no flush per chunk
        for first in range(0, jobs_count, JOBS_PER_CHUNK):
            last = min(first + JOBS_PER_CHUNK, jobs_count)
            _write_chunk(conn, range(first, last), holders, start, sealing)
            conn.commit()
            spent = time.monotonic() - began
            say(
                f"{last:,} jobs, {sealing.position:,} events "
                f"({sealing.position / spent:,.0f} events/s)"
            )
        _finish(conn, sealing)
        conn.commit()
    return sealing


def _write_chunk(
    conn: psycopg.Connection[Any],
    numbers: range,
    holders: Sequence[str],
    start: datetime,
    sealing: Sealing,
) -> None:
    (tx_id,) = conn.execute("SELECT pg_current_xact_id()::text").fetchone() or ("0",)
    stories = [history(n, start, holders) for n in numbers]
    statuses = [fold_all(story) for story in stories]
    ordered = sorted((e for story in stories for e in story), key=lambda e: e.recorded_at)
    with conn.cursor() as cursor:
        with cursor.copy(_copy(jobs.name, STATUS_FIELDS)) as copy:
            for status in statuses:
                assert isinstance(status, JobStatus)
                copy.write_row([getattr(status, c) for c in STATUS_FIELDS])
        event_columns = ("position", *EVENT_FIELDS, "tx_id")
        link_columns = tuple(c.name for c in anchor.columns)
        links = []
        with cursor.copy(_copy(events.name, event_columns)) as copy:
            for event in ordered:
                sealing.position += 1
                position = sealing.position
                copy.write_row(
                    (
                        position,
                        event.job_id,
                        event.version,
                        event.type,
                        event.process,
                        json.dumps(event.data),
                        event.recorded_at,
                        event.prev_hash,
                        event.hash,
                        tx_id,
                    )
                )
                sealing.digest = encoded_link_digest(
                    sealing.digest,
                    position,  # seq: one link per event, in position (= commit) order
                    position,
                    canonical_string(event.job_id),
                    event.version,
                    event.hash,
                )
                links.append((position, position, event.job_id, event.version, sealing.digest))
        with cursor.copy(_copy(anchor.name, link_columns)) as copy:
            for link in links:
                copy.write_row(link)
    sealing.tx_id = int(tx_id)


def _copy(table: str, columns: Sequence[str]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN"


def _finish(conn: psycopg.Connection[Any], sealing: Sealing) -> None:
    """The position sequence past the last event, the sealer's checkpoint at the last
    event, and the queue figures as a caught-up ``queue_stats`` catch-up holds them."""
    conn.execute(
        "SELECT setval(pg_get_serial_sequence(%s, 'position'), %s)",
        (events.name, sealing.position),
    )
    for name in (ANCHOR_CHECKPOINT, "queue_stats"):
        conn.execute(
            f"INSERT INTO {checkpoints.name} (name, position, tx_id, updated_at) "
            "VALUES (%s, %s, %s, now())",
            (name, sealing.position, sealing.tx_id),
        )
    # The job counts are exact; the run figures count claims that ended in each state
    # once per job (the catch-up counts every run), close enough for the pages' reads.
    conn.execute(
        """INSERT INTO jobledger_queue_stats (queue, state, jobs, runs, run_seconds,
            max_run_seconds)
        SELECT queue, state, count(*), count(*) FILTER (WHERE finished_at IS NOT NULL),
            coalesce(sum(extract(epoch FROM finished_at - claimed_at))
                FILTER (WHERE finished_at IS NOT NULL AND claimed_at IS NOT NULL), 0),
            coalesce(max(extract(epoch FROM finished_at - claimed_at)), 0)
        FROM jobledger_jobs GROUP BY queue, state"""
    )


def start_time(jobs_count: int) -> datetime:
    """When the first job was enqueued: early enough that the last event is an hour old."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return now - jobs_count * JOB_SPACING - timedelta(hours=1)


def iter_holders(count: int) -> Iterator[str]:
    """``count`` worker identities as ``jobledger.identity.new_identity`` spells them."""
    for n in range(count):
        yield f"host-{n % 500}:{10000 + n}:{n * 2654435761 % 2**64:016x}"
