"""One event appended per save: the Ledger against the ``eventsourcing`` library (9.x).

jobledger's side is ``Ledger.heartbeat`` with throttling off: each call reads the
job row and the database clock, checks the claim's token, chains the event's
hash, folds the projection and appends one event in one guarded statement.
The baseline is an eventsourcing ``Application`` on PostgreSQL with the same
shape of work per save: one aggregate, one new event, ``app.save``. Its
aggregates stay in memory (no repository read per save), which favours it.
Both write to the same PostgreSQL server, each into its own scratch database.
"""

from __future__ import annotations

from typing import Any

from common import Row, Settings, interleaved, postgres_database
from sqlalchemy.engine import make_url

from jobledger import Ledger

PROCESS = "bench-host:4242:0123456789abcdef"


def run(settings: Settings) -> list[Row]:
    blocks, per_block = settings.pick(30, 80), settings.pick(30, 50)
    streams = 100
    with postgres_database() as ours_url, postgres_database("eventsourcing_bench") as theirs_url:
        ledger = Ledger(ours_url, heartbeat_interval=0)
        job_ids = [f"job-{i}" for i in range(streams)]
        ledger.enqueue_many(job_ids)
        claims = [ledger.claim(job_id, PROCESS) for job_id in job_ids]
        app, aggregates = eventsourcing_app(theirs_url, streams)

        def ours(block: int) -> None:
            for i in range(block * per_block, (block + 1) * per_block):
                ledger.heartbeat(claims[i % streams])

        def theirs(block: int) -> None:
            for i in range(block * per_block, (block + 1) * per_block):
                aggregate = aggregates[i % streams]
                aggregate.beat(progress=None)
                app.save(aggregate)

        ours(0), theirs(0)  # warm up: connections, prepared statements
        paired = interleaved(blocks, per_block, ours, theirs)
        app.close()
        ledger.close()
    row = Row(
        "one event appended per save, PostgreSQL",
        paired.ours,
        paired.baseline,
        "events/s",
        "eventsourcing 9.x Application.save",
        "≥ 2x",
        met=paired.ratio >= 2,
        note=paired.note(),
        paired_ratio=paired.ratio,
    )
    return [row]


def eventsourcing_app(url: str, streams: int) -> tuple[Any, list[Any]]:
    """An eventsourcing Application on the database at ``url``, with ``streams`` aggregates."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Job(Aggregate):
        @event("Beat")
        def beat(self, progress: Any) -> None:
            self.progress = progress

    class Jobs(Application[Any]):
        pass

    parts = make_url(url)
    app = Jobs(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.database or "",
            "POSTGRES_HOST": parts.host or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "CREATE_TABLE": "y",
        }
    )
    aggregates = [Job() for _ in range(streams)]
    app.save(*aggregates)
    return app, aggregates
