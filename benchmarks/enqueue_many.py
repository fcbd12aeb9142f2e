"""enqueue_many of 100k jobs: the Ledger against raw psycopg ``executemany``.

jobledger's side is ``Ledger.enqueue_many(ids)``: it validates every id,
builds each job's first event (canonical JSON, SHA-256 of the chain's first
link) and its projection row, and writes them ``batch_size`` (5000) jobs per
transaction. The baseline writes the same rows, already built before the clock
starts, with the same INSERT statements and the same batches, through psycopg's
``executemany`` (which pipelines). Both start from empty tables.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from common import Row, Settings, libpq_url, paired_rates, postgres_database, rate
from sqlalchemy import func, insert
from sqlalchemy.dialects import postgresql

from jobledger import Ledger
from jobledger.schema import events, jobs

BATCH = 5000


def run(settings: Settings) -> list[Row]:
    count, rounds = 100_000, settings.pick(1, 3)
    with postgres_database() as url:
        ledger = Ledger(url, batch_size=BATCH)
        raw = RawEnqueue(url)
        rows = [raw.rows(f"raw-{r}", count) for r in range(rounds)]

        def ours(r: int) -> float:
            raw.empty()
            return rate(count, lambda: ledger.enqueue_many(f"ours-{r}-{i}" for i in range(count)))

        def theirs(r: int) -> float:
            raw.empty()
            return rate(count, lambda: raw.write(rows[r]))

        paired = paired_rates(rounds, ours, theirs)
        raw.close()
        ledger.close()
    row = Row(
        "enqueue_many 100k jobs, PostgreSQL",
        paired.ours,
        paired.baseline,
        "jobs/s",
        "raw psycopg executemany, same rows",
        "≥ 0.7x",
        met=paired.ratio >= 0.7,
        note=paired.note(),
        paired_ratio=paired.ratio,
    )
    return [row]


class RawEnqueue:
    """The INSERTs ``enqueue_many`` sends, run with psycopg alone."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.connection = psycopg.connect(libpq_url(url))
        dialect = postgresql.dialect(paramstyle="pyformat")  # type: ignore[no-untyped-call]
        self.jobs_sql = str(
            insert(jobs).compile(dialect=dialect, column_keys=[c.name for c in jobs.columns])
        )
        event_insert = insert(events).values(tx_id=func.pg_current_xact_id())
        names = ["job_id", "version", "type", "process", "data", "recorded_at", "prev_hash", "hash"]
        self.events_sql = str(event_insert.compile(dialect=dialect, column_keys=names))

    def rows(
        self, prefix: str, count: int
    ) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """``count`` jobs' projection rows and first events, in batches."""
        from psycopg.types.json import Jsonb

        now = datetime.now(timezone.utc)
        batches = []
        for start in range(0, count, BATCH):
            job_rows, event_rows = [], []
            for i in range(start, min(start + BATCH, count)):
                job_id = f"{prefix}-{i}"
                digest = hashlib.sha256(job_id.encode()).hexdigest()
                job_rows.append(
                    {
                        "job_id": job_id,
                        "queue": "default",
                        "state": "enqueued",
                        "version": 1,
                        "attempt": 0,
                        "claimed_by": None,
                        "claim_token": None,
                        "enqueued_at": now,
                        "claimed_at": None,
                        "heartbeat_at": None,
                        "finished_at": None,
                        "updated_at": now,
                        "last_error": None,
                        "last_hash": digest,
                    }
                )
                event_rows.append(
                    {
                        "job_id": job_id,
                        "version": 1,
                        "type": "enqueued",
                        "process": None,
                        "data": Jsonb({"queue": "default", "data": None}),
                        "recorded_at": now,
                        "prev_hash": "0" * 64,
                        "hash": digest,
                    }
                )
            batches.append((job_rows, event_rows))
        return batches

    def write(self, batches: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> None:
        for job_rows, event_rows in batches:
            with self.connection.transaction(), self.connection.cursor() as cursor:
                cursor.execute("SELECT now()")  # the ledger reads the clock once per batch
                cursor.executemany(self.jobs_sql, job_rows)
                cursor.executemany(self.events_sql, event_rows)

    def empty(self) -> None:
        with self.connection.transaction():
            self.connection.execute(f"TRUNCATE {jobs.name}, {events.name}")

    def close(self) -> None:
        self.connection.close()
