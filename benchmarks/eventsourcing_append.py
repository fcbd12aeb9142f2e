"""One event appended per save: the Ledger against the ``eventsourcing`` library (9.x).

jobledger's side is ``Ledger.heartbeat`` with throttling off: each call reads the
job row and the database clock, checks the claim's token, chains the event's
hash, folds the projection and appends one event in one guarded statement.

The baseline is an eventsourcing ``Application`` on the same PostgreSQL server
(its own scratch database), one new event per ``app.save``, in two shapes:

- from the id, like the ledger: ``repository.get(id)`` with eventsourcing's
  aggregate cache (which fast-forwards with one read of newer events), one
  event, ``save``;
- aggregates kept in memory: one event, ``save``, no read at all. This is the
  cheapest eventsourcing can append, and does less than the ledger does.
"""

from __future__ import annotations

import functools
from typing import Any

from common import Row, Settings, interleaved, postgres_database
from sqlalchemy.engine import make_url

from jobledger import Ledger

PROCESS = "bench-host:4242:0123456789abcdef"
STREAMS = 100


def run(settings: Settings) -> list[Row]:
    blocks, per_block = settings.pick(30, 80), settings.pick(30, 50)
    with postgres_database() as ours_url, postgres_database("eventsourcing_bench") as theirs_url:
        ledger = Ledger(ours_url, heartbeat_interval=0)
        job_ids = [f"job-{i}" for i in range(STREAMS)]
        ledger.enqueue_many(job_ids)
        claims = [ledger.claim(job_id, PROCESS) for job_id in job_ids]
        by_id, ids = eventsourcing_app(theirs_url, "JobsById", cached=True)
        in_memory, aggregates = eventsourcing_app(theirs_url, "JobsInMemory", cached=False)

        def ours(block: int) -> None:
            for i in range(block * per_block, (block + 1) * per_block):
                ledger.heartbeat(claims[i % STREAMS])

        def from_id(block: int) -> None:
            for i in range(block * per_block, (block + 1) * per_block):
                aggregate = by_id.repository.get(ids[i % STREAMS])
                aggregate.beat(progress=None)
                by_id.save(aggregate)

        def from_memory(block: int) -> None:
            for i in range(block * per_block, (block + 1) * per_block):
                aggregate = aggregates[i % STREAMS]
                aggregate.beat(progress=None)
                in_memory.save(aggregate)

        ours(0), from_id(0), from_memory(0)  # warm up: connections, prepared statements
        versus_id = interleaved(blocks, per_block, ours, from_id)
        versus_memory = interleaved(blocks, per_block, ours, from_memory)
        by_id.close()
        in_memory.close()
        ledger.close()
    return [
        row("from the id (get, one event, save)", versus_id),
        row("aggregates kept in memory (no read)", versus_memory),
    ]


def row(shape: str, paired: Any) -> Row:
    return Row(
        f"one event appended per save, PostgreSQL; eventsourcing {shape}",
        paired.ours,
        paired.baseline,
        "events/s",
        "eventsourcing 9.x Application.save",
        "≥ 2x",
        met=paired.ratio >= 2,
        note=paired.note(),
        paired_ratio=paired.ratio,
    )


@functools.cache
def job_class() -> Any:
    """The aggregate, defined once (eventsourcing registers each class by its topic)."""
    from eventsourcing.domain import Aggregate, event

    class Job(Aggregate):
        @event("Beat")
        def beat(self, progress: Any) -> None:
            self.progress = progress

    return Job


def eventsourcing_app(url: str, name: str, cached: bool) -> tuple[Any, list[Any]]:
    """An eventsourcing Application called ``name`` on ``url``, with its aggregates.

    Returns the application and, if ``cached``, the aggregates' ids (the
    application caches aggregates by id), else the aggregate objects themselves.
    """
    from eventsourcing.application import Application

    parts = make_url(url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.database or "",
        "POSTGRES_HOST": parts.host or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
        "CREATE_TABLE": "y",
    }
    if cached:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(STREAMS * 2)
    app = type(name, (Application,), {})(env=env)
    aggregates = [job_class()() for _ in range(STREAMS)]
    app.save(*aggregates)
    return app, [a.id for a in aggregates] if cached else aggregates
