"""verify, rebuild and export of 1M events: how fast the audit streams.

    python benchmarks/audit_throughput.py                      # 1M events, PostgreSQL and SQLite
    python benchmarks/audit_throughput.py --events 200000 --backend postgresql
    python benchmarks/run.py --only audit_throughput           # as part of the results table

The ledger is filled once per backend with correctly chained histories
(``audit_data.populate``: real hashes, projection rows that are the fold of
their events, about 4.3 events per job). Then, in alternating rounds, jobledger
runs ``verify`` (every hash recomputed, every chain, lifecycle path and
projection row checked), ``rebuild`` (delete and re-fold the projection in one
transaction) and ``export`` (JSON lines to /dev/null), and the baseline fetches
the same event rows in the same order with the bare driver (psycopg's named
cursor, or sqlite3), decoding nothing it does not have to. Rates are events/s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from collections.abc import Callable

from audit_data import populate
from common import Row, Settings, libpq_url, paired_rates, postgres_database, sqlite_database

from jobledger import Ledger

TARGET = 300_000
FETCH = (
    "SELECT position, job_id, version, type, process, data, recorded_at, prev_hash, hash "
    "FROM jobledger_events ORDER BY job_id, version"
)


def run(settings: Settings) -> list[Row]:
    count, rounds = settings.pick(200_000, 1_000_000), settings.pick(1, 3)
    rows = []
    for backend in ("postgresql", "sqlite"):
        rows += measure(backend, count, rounds)
    return rows


def measure(backend: str, count: int, rounds: int) -> list[Row]:
    database = postgres_database if backend == "postgresql" else sqlite_database
    with database() as url, Ledger(url) as ledger:
        started = time.perf_counter()
        populate(ledger.engine, count)
        print(f"  {backend}: {count:,} events written in {time.perf_counter() - started:.0f} s")
        fetch = _raw_fetch(url, backend)
        name = "PostgreSQL" if backend == "postgresql" else "SQLite"

        def verify(_: int) -> float:
            started = time.perf_counter()
            report = ledger.verify()
            seconds = time.perf_counter() - started
            if not report.ok or report.events != count:
                raise AssertionError(f"verify found problems: {report.problems[:3]}")
            return count / seconds

        def rebuild(_: int) -> float:
            return _rate(count, ledger.rebuild)

        def export(_: int) -> float:
            with open(os.devnull, "w", encoding="utf-8") as out:
                return _rate(count, lambda: ledger.export(out))

        def baseline(_: int) -> float:
            return _rate(count, fetch)

        results = []
        for what, ours, target in (
            ("verify", verify, f"≥ {TARGET // 1000}k events/s"),
            ("rebuild", rebuild, f"≥ {TARGET // 1000}k events/s"),
            ("export", export, "—"),
        ):
            paired = paired_rates(rounds, ours, baseline)
            results.append(
                Row(
                    f"{what} of {count / 1e6:g}M events, {name}",
                    paired.ours,
                    paired.baseline,
                    "events/s",
                    "bare driver fetch of the same rows",
                    target,
                    met=paired.ours >= TARGET if target != "—" else None,
                    note=paired.note(),
                    paired_ratio=paired.ratio,
                )
            )
        return results


def _rate(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def _raw_fetch(url: str, backend: str) -> Callable[[], int]:
    """The baseline: every event row, in verify's order, through the driver alone."""
    if backend == "postgresql":
        import psycopg

        def fetch_postgresql() -> int:
            fetched = 0
            with psycopg.connect(libpq_url(url)) as conn, conn.cursor(name="baseline") as cursor:
                cursor.execute(FETCH)
                while rows := cursor.fetchmany(10_000):
                    fetched += len(rows)
            return fetched

        return fetch_postgresql

    path = url.removeprefix("sqlite:///")

    def fetch_sqlite() -> int:
        fetched = 0
        with sqlite3.connect(path) as conn:
            cursor = conn.execute(FETCH)
            while rows := cursor.fetchmany(10_000):
                fetched += len(rows)
        return fetched

    return fetch_sqlite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    for backend in backends:
        for row in measure(backend, args.events, args.rounds):
            print(
                f"{row.benchmark}: {row.ours:,.0f} {row.unit} "
                f"(bare driver fetch {row.baseline:,.0f}; median of {args.rounds} rounds)"
            )


if __name__ == "__main__":
    main()
