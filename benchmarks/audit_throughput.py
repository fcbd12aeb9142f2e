"""verify, rebuild and export of 1M events: how fast the audit streams.

    python benchmarks/audit_throughput.py                      # 1M events, PostgreSQL and SQLite
    python benchmarks/audit_throughput.py --events 200000 --backend postgresql
    python benchmarks/run.py --only audit_throughput           # as part of the results table
    python benchmarks/audit_throughput.py --keep jl_audit_1m   # fill once, reuse next time

Both ledgers are filled once, from one generation of correctly chained
histories (``audit_data.populate``: real hashes, projection rows that are the
fold of their events, about 4.3 events per job), sealed into the ledger-wide
anchor, and settled (VACUUM ANALYZE).
Then, in rounds whose order flips every time, jobledger runs ``verify`` (every
hash recomputed, every chain, lifecycle path and projection row checked, and
the anchor's links against the events),
``rebuild`` (delete and re-fold the projection in one transaction) and
``export`` (JSON lines to /dev/null), each with its default number of worker
processes (one per CPU), and the baseline fetches the same event rows in the
same order with the bare driver, as fast as that driver goes: one ``COPY ...
TO STDOUT`` read row by row (psycopg), or one sqlite3 cursor, in one process,
decoding nothing. Rates are events/s; a ratio is the median of the rounds'
ratios to the baseline of the same round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator

from audit_data import populate
from common import (
    POSTGRES_SERVER_URL,
    Row,
    Settings,
    libpq_url,
    postgres_database,
    sqlite_database,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from jobledger import Ledger
from jobledger.sealer import Sealer

TARGET = 300_000
COLUMNS = "job_id, version, type, process, data, recorded_at, prev_hash, hash"
FETCH = f"SELECT {COLUMNS} FROM jobledger_events ORDER BY job_id, version"
NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def run(settings: Settings) -> list[Row]:
    count, rounds = settings.pick(200_000, 1_000_000), settings.pick(1, 3)
    return measure(["postgresql", "sqlite"], count, rounds)


def measure(backends: list[str], count: int, rounds: int, keep: str | None = None) -> list[Row]:
    with (
        _databases(keep) as (postgres_url, sqlite_url),
        Ledger(postgres_url) as postgres,
        Ledger(sqlite_url) as sqlite,
    ):
        ledgers = {"postgresql": postgres, "sqlite": sqlite}
        empty = [b for b in backends if _events(ledgers[b]) == 0]
        stale = [b for b in backends if b not in empty and _events(ledgers[b]) != count]
        if stale:
            raise SystemExit(f"kept databases hold another number of events: {stale}")
        if empty:
            started = time.perf_counter()
            populate([ledgers[b].engine for b in empty], count)
            print(
                f"  {count:,} events written in {time.perf_counter() - started:.0f} s", flush=True
            )
        for backend in empty:  # verify checks the anchor and export carries it, as in use
            started = time.perf_counter()
            Sealer(ledgers[backend]).run_once()
            print(f"  sealed on {backend} in {time.perf_counter() - started:.0f} s", flush=True)
        with postgres.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(
                "VACUUM ANALYZE jobledger_events, jobledger_jobs, jobledger_anchor"
            )
        rows = []
        for backend in backends:
            url = postgres_url if backend == "postgresql" else sqlite_url
            rows += _rounds(ledgers[backend], backend, _raw_fetch(url, backend), count, rounds)
        return rows


@contextlib.contextmanager
def _databases(keep: str | None) -> Iterator[tuple[str, str]]:
    """Scratch databases, or with ``keep`` named ones that outlive the run (filled once)."""
    if keep is None:
        with postgres_database() as postgres_url, sqlite_database() as sqlite_url:
            yield postgres_url, sqlite_url
        return
    server = make_url(POSTGRES_SERVER_URL)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": keep})
        if exists.first() is None:
            conn.execute(text(f'CREATE DATABASE "{keep}"'))
    admin.dispose()
    postgres_url = server.set(database=keep).render_as_string(hide_password=False)
    sqlite_url = f"sqlite:////tmp/{keep}.db"
    for url in (postgres_url, sqlite_url):
        with Ledger(url) as ledger:
            ledger.migrate()
    yield postgres_url, sqlite_url


def _events(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM jobledger_events").scalar_one())


def _rounds(
    ledger: Ledger, backend: str, fetch: Callable[[], int], count: int, rounds: int
) -> list[Row]:
    """Alternating rounds of the baseline and each audit; a row per audit."""

    def verify() -> None:
        report = ledger.verify()
        if not report.ok or report.events != count:
            raise AssertionError(f"verify found problems: {report.problems[:3]}")

    def rebuild() -> None:
        ledger.rebuild()

    def export() -> None:
        with open(os.devnull, "w", encoding="utf-8") as out:
            ledger.export(out)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("baseline", fetch),
        ("verify", verify),
        ("rebuild", rebuild),
        ("export", export),
    ]
    rates: dict[str, list[float]] = {name: [] for name, _ in steps}
    for number in range(rounds):
        for name, step in steps if number % 2 == 0 else reversed(steps):
            rates[name].append(_rate(count, step))
            if name == "rebuild" and backend == "postgresql":
                _settle(ledger)  # the old rows are dead tuples now
        print(
            f"  {backend} round {number + 1}: "
            + ", ".join(f"{name} {rate[-1]:,.0f}/s" for name, rate in rates.items()),
            flush=True,
        )
    baseline = rates["baseline"]
    rows = []
    for name, target in (("verify", TARGET), ("rebuild", TARGET), ("export", None)):
        ratios = [ours / theirs for ours, theirs in zip(rates[name], baseline, strict=True)]
        rows.append(
            Row(
                f"{name} of {count / 1e6:g}M events, {NAMES[backend]}",
                statistics.median(rates[name]),
                statistics.median(baseline),
                "events/s",
                "bare driver fetch of the same rows, 1 process",
                f"≥ {target // 1000}k events/s" if target else "—",
                met=statistics.median(rates[name]) >= target if target else None,
                note=(
                    f"medians of {rounds} rounds"
                    + (f", {os.cpu_count()} worker processes" if name != "export" else "")
                    + "; ratio = median of per-round ratios"
                ),
                paired_ratio=statistics.median(ratios),
            )
        )
    return rows


def _rate(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def _settle(ledger: Ledger) -> None:
    with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE jobledger_jobs")


def _raw_fetch(url: str, backend: str) -> Callable[[], int]:
    """The baseline: every event row, in verify's order, through the driver alone."""
    if backend == "postgresql":
        import psycopg

        def fetch_postgresql() -> int:
            fetched = 0
            with (
                psycopg.connect(libpq_url(url)) as conn,
                conn.cursor() as cursor,
                cursor.copy(f"COPY ({FETCH}) TO STDOUT") as copy,
            ):
                read = copy.read
                while read():
                    fetched += 1
            return fetched

        return fetch_postgresql

    path = url.removeprefix("sqlite:///")

    def fetch_sqlite() -> int:
        fetched = 0
        with sqlite3.connect(path) as conn:
            for _ in conn.execute(FETCH):
                fetched += 1
        return fetched

    return fetch_sqlite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument(
        "--keep",
        metavar="NAME",
        help="use (and keep) PostgreSQL database NAME and /tmp/NAME.db, filled on first use",
    )
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    for row in measure(backends, args.events, args.rounds, args.keep):
        print(
            f"{row.benchmark}: {row.ours:,.0f} {row.unit} "
            f"(bare driver fetch {row.baseline:,.0f}; median of {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
