"""Where a claim+complete's time goes, against the limit: the commit's flush, and the rest.

    python benchmarks/command_floor.py [--quick]

A diagnostic, not in ``run.py``'s table. For each backend it times, in alternating
blocks (``common.interleaved``), the ledger side and the limit side of
``claim_complete`` twice: as the benchmark runs them, and with the commit's flush
turned off for the session (SQLite ``PRAGMA synchronous=OFF``, PostgreSQL
``SET synchronous_commit = off``: for this measurement only, never in the benchmark).
The difference is what the flush costs each side; what is left is the client's and
the server's work, which is where the ledger differs from the limit. It also reports
the client's CPU per operation (``time.process_time``) on each side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from claim_complete import (
    LedgerSide,
    LimitPostgres,
    LimitSqlite,
    enqueue,
    ids,
)
from common import Settings, postgres_database, sqlite_database

WARM_UP = 20


def no_flush(side: Any, backend: str) -> None:
    """Turn off the commit's flush on ``side``'s connection (this diagnostic only)."""
    sql = "PRAGMA synchronous=OFF" if backend == "sqlite" else "SET synchronous_commit = off"
    if isinstance(side, LedgerSide):
        store = side.ledger._store
        conn, _ = store._held.take()
        conn.dbapi_connection.execute(sql)
        store._held.give_back(conn)
    else:
        side.connection.execute(sql)


def measure(url: str, backend: str, limit_class: type[Any], settings: Settings) -> dict[str, Any]:
    blocks, per_block = settings.pick(20, 60), settings.pick(25, 40)
    names = [f"{side}-{flush}" for side in ("ours", "limit") for flush in ("flush", "noflush")]
    work = {name: [ids(name, b, per_block) for b in range(blocks)] for name in names}
    warm = {name: ids(f"warm-{name}", 0, WARM_UP) for name in names}
    enqueue(url, [j for name in names for chunk in work[name] + [warm[name]] for j in chunk])
    sides: dict[str, Any] = {}
    for name in names:
        side = LedgerSide(url) if name.startswith("ours") else limit_class(url)
        if name.endswith("noflush"):
            no_flush(side, backend)
        side.prepare(warm[name] + [j for chunk in work[name] for j in chunk])
        side.run(warm[name])
        sides[name] = side
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for block in range(blocks):
        order = names if block % 2 == 0 else list(reversed(names))
        for name in order:
            started, used = time.perf_counter(), time.process_time()
            sides[name].run(work[name][block])
            wall[name].append((time.perf_counter() - started) / per_block)
            cpu[name].append((time.process_time() - used) / per_block)
    for side in sides.values():
        side.close()
    return {
        name: (statistics.median(wall[name]) * 1e6, statistics.median(cpu[name]) * 1e6)
        for name in names
    }


def report(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title} (µs per claim+complete, medians of alternating blocks)")
    print("| side | wall | wall, no flush | flush | client CPU |")
    print("|---|---:|---:|---:|---:|")
    for side in ("ours", "limit"):
        wall, cpu = figures[f"{side}-flush"]
        bare, _ = figures[f"{side}-noflush"]
        print(f"| {side} | {wall:,.0f} | {bare:,.0f} | {wall - bare:,.0f} | {cpu:,.0f} |")
    ours, limit = figures["ours-flush"][0], figures["limit-flush"][0]
    print(f"ratio (limit wall / ours wall): {limit / ours:.2f}x")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    settings = Settings(quick=parser.parse_args(argv).quick)
    runs: list[tuple[str, Callable[[], Any], str, type[Any]]] = [
        ("SQLite (WAL, synchronous=FULL)", sqlite_database, "sqlite", LimitSqlite),
        ("PostgreSQL, 1 process", postgres_database, "postgresql", LimitPostgres),
    ]
    for title, database, backend, limit_class in runs:
        with database() as url:
            report(title, measure(url, backend, limit_class, settings))


if __name__ == "__main__":
    main(sys.argv[1:])
