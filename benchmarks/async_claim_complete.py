"""async claim+complete: AsyncLedger against raw psycopg async running the same SQL, and
against the sync Ledger, in one process.

One operation is ``complete(claim(job, seen=row))``, as in ``claim_complete.py``: the
claim goes out from the row the job's message would carry (read before the timing),
the complete from the row the claim wrote, so on PostgreSQL each command is one
guarded write and no read. A block is 50 jobs worked at once on one event loop (50
coroutines, each claiming and completing its own job) over a pool of 10 connections.

- "same SQL": raw psycopg ``AsyncConnection``s (10, shared through a queue) sending the
  very statement the ledger sends (``pg_append_unread``, text from the ledger itself)
  with values built by hand: no validation, fencing, canonical JSON, hash chain or fold.
- sync: the sync Ledger in one thread, one job after the other (how one process of a
  sync worker runs); on SQLite too, where the async side pays aiosqlite's thread hops.

Blocks alternate (ABBA) and a rate is jobs per median block time, as everywhere here.

    python benchmarks/async_claim_complete.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from claim_complete import (
    PROCESS,
    command_sql,
    enqueue,
    ids,
    known,
    next_values,
    row,
    written,
)
from common import Paired, Row, Settings, interleaved, libpq_url, postgres_database, sqlite_database

from jobledger import Ledger
from jobledger.aio import AsyncLedger
from jobledger.records import JobStatus

CONCURRENT = 50
POOL = 10


def run(settings: Settings) -> list[Row]:
    with postgres_database() as url:
        raw = async_against_raw(settings, url)
        sync_pg = async_against_sync(settings, url)
    with sqlite_database() as url:
        sync_sqlite = async_against_sync(settings, url)
    return [
        row(
            f"async claim+complete, {CONCURRENT} concurrent jobs on one loop, PostgreSQL",
            f"raw psycopg async, same SQL, {POOL} connections",
            raw,
            0.8,
        ),
        throughput_row("PostgreSQL", sync_pg),
        throughput_row("SQLite (WAL)", sync_sqlite),
    ]


def throughput_row(database: str, paired: Paired) -> Row:
    return Row(
        f"AsyncLedger ({CONCURRENT} concurrent) vs sync Ledger (one thread), {database}",
        paired.ours,
        paired.baseline,
        "ops/s",
        "sync Ledger, same process",
        "(comparison)",
        met=None,
        note=paired.note(),
        paired_ratio=paired.ratio,
    )


# -- the sides --------------------------------------------------------------------------


class AsyncLedgerSide:
    """claim+complete through the AsyncLedger, ``CONCURRENT`` jobs at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[str, JobStatus] = {}

    async def open(self) -> None:
        self.ledger = AsyncLedger(self.url, pool_size=POOL)

    async def prepare(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self.seen[job_id] = await self.ledger.status(job_id)

    async def one(self, job_id: str) -> None:
        ledger = self.ledger
        claim = await ledger.claim(job_id, PROCESS, seen=self.seen.pop(job_id))
        await ledger.complete(claim)

    async def block(self, job_ids: Sequence[str]) -> None:
        await asyncio.gather(*(self.one(job_id) for job_id in job_ids))

    async def close(self) -> None:
        await self.ledger.close()


class RawAsyncPostgres:
    """claim+complete by hand on psycopg's AsyncConnection: the ledger's unread write."""

    def __init__(self, url: str, sql: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self.url = url
        self.load_sql, _ = sql["load"]
        self.unread = sql["pg_append_unread"]
        self.held = sql["pg_append_held"]
        self.seen: dict[str, Any] = {}

    async def open(self) -> None:
        import psycopg

        self.pool: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(POOL):
            conn = await psycopg.AsyncConnection.connect(libpq_url(self.url), autocommit=True)
            self.pool.put_nowait((conn, conn.cursor()))

    async def prepare(self, job_ids: Sequence[str]) -> None:
        conn, cursor = await self.pool.get()
        for job_id in job_ids:
            await cursor.execute(self.load_sql, [job_id])
            (self.seen[job_id],) = await cursor.fetchall()
        self.pool.put_nowait((conn, cursor))

    async def one(self, job_id: str) -> None:
        seen = self.seen.pop(job_id)[1:]
        status = await self.write(job_id, "claimed", seen, held=False)
        await self.write(job_id, "completed", written(status), held=True)

    async def write(self, job_id: str, kind: str, seen: list[Any], held: bool) -> dict[str, Any]:
        """The unread write after the row ``seen``, stamped once a connection is in hand
        (as the ledger does), guarded by the whole row or (``held``, a row this side wrote)
        its last hash; the status it wrote."""
        conn, cursor = await self.pool.get()
        status, event = next_values(job_id, kind, [datetime.now(timezone.utc), *seen])
        guard = {"k_last_hash": seen[13]} if held else known(seen)
        sql, names = self.held if held else self.unread
        params = {
            **status,
            **guard,
            "e_version": event["version"],
            "e_type": status["j_state"],
            "e_process": PROCESS,
            "e_data": json.dumps(event["data"]),  # as the ledger: text, cast by the SQL
            "e_recorded_at": event["recorded_at"],
            "e_prev_hash": event["prev_hash"],
            "e_hash": event["hash"],
        }
        try:
            await cursor.execute(sql, [params[name] for name in names])
            if not await cursor.fetchall():
                raise RuntimeError(f"baseline lost a race on {job_id}")
        finally:
            self.pool.put_nowait((conn, cursor))
        return status

    async def block(self, job_ids: Sequence[str]) -> None:
        await asyncio.gather(*(self.one(job_id) for job_id in job_ids))

    async def close(self) -> None:
        while not self.pool.empty():
            conn, _ = self.pool.get_nowait()
            await conn.close()


class SyncLedgerSide:
    """claim+complete through the sync Ledger, one job after the other."""

    def __init__(self, url: str) -> None:
        self.ledger = Ledger(url)
        self.seen: dict[str, JobStatus] = {}

    def prepare(self, job_ids: Sequence[str]) -> None:
        self.seen.update((job_id, self.ledger.status(job_id)) for job_id in job_ids)

    def block(self, job_ids: Sequence[str]) -> None:
        ledger, seen = self.ledger, self.seen
        for job_id in job_ids:
            ledger.complete(ledger.claim(job_id, PROCESS, seen=seen.pop(job_id)))

    def close(self) -> None:
        self.ledger.close()


# -- the runs ---------------------------------------------------------------------------


def _blocks(settings: Settings, url: str, sides: Sequence[str]) -> dict[str, list[list[str]]]:
    blocks = settings.pick(20, 60)
    made = {side: [ids(side, b, CONCURRENT) for b in range(blocks)] for side in sides}
    made.update({f"warm-{side}": [ids(f"warm-{side}", 0, CONCURRENT)] for side in sides})
    enqueue(url, [job for chunks in made.values() for chunk in chunks for job in chunk])
    return made


def async_against_raw(settings: Settings, url: str) -> Paired:
    jobs = _blocks(settings, url, ("ours", "raw"))
    loop = asyncio.new_event_loop()
    ours, raw = AsyncLedgerSide(url), RawAsyncPostgres(url, command_sql(url))
    for side, name in ((ours, "ours"), (raw, "raw")):
        loop.run_until_complete(side.open())
        everything = [j for chunk in jobs[name] + jobs[f"warm-{name}"] for j in chunk]
        loop.run_until_complete(side.prepare(everything))
        loop.run_until_complete(side.block(jobs[f"warm-{name}"][0]))
    paired = interleaved(
        len(jobs["ours"]),
        CONCURRENT,
        lambda b: loop.run_until_complete(ours.block(jobs["ours"][b])),
        lambda b: loop.run_until_complete(raw.block(jobs["raw"][b])),
    )
    loop.run_until_complete(ours.close())
    loop.run_until_complete(raw.close())
    loop.close()
    return paired


def async_against_sync(settings: Settings, url: str) -> Paired:
    jobs = _blocks(settings, url, ("async", "sync"))
    loop = asyncio.new_event_loop()
    ours, sync = AsyncLedgerSide(url), SyncLedgerSide(url)
    loop.run_until_complete(ours.open())
    loop.run_until_complete(
        ours.prepare([j for c in jobs["async"] + jobs["warm-async"] for j in c])
    )
    sync.prepare([j for chunk in jobs["sync"] + jobs["warm-sync"] for j in chunk])
    loop.run_until_complete(ours.block(jobs["warm-async"][0]))
    sync.block(jobs["warm-sync"][0])
    paired = interleaved(
        len(jobs["async"]),
        CONCURRENT,
        lambda b: loop.run_until_complete(ours.block(jobs["async"][b])),
        lambda b: sync.block(jobs["sync"][b]),
    )
    loop.run_until_complete(ours.close())
    loop.close()
    sync.close()
    return paired


if __name__ == "__main__":
    for result in run(Settings(quick="--quick" in sys.argv)):
        print(
            f"{result.benchmark}: {result.ours:.0f} vs {result.baseline:.0f} {result.unit} "
            f"({result.baseline_name}) = {result.ratio:.2f}x, target {result.target or '-'}"
        )
