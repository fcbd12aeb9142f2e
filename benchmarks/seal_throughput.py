"""Sealing: how fast the sealer links events into the anchor, against the bare catch-up.

    python benchmarks/seal_throughput.py                         # 1M events, PostgreSQL
    python benchmarks/seal_throughput.py --events 200000 --backend both
    python benchmarks/run.py --only seal_throughput

One generation of correctly chained histories (``audit_data.populate``) is
written once and settled. Then, in rounds whose order flips every time, the
sealer (``jobledger.sealer.Sealer``: catch-up reading, a digest per event, one
multi-row INSERT per batch, the checkpoint) seals every event from an empty
anchor, and the baseline is the bare catch-up: the same ``CatchUp`` reading
the same events in the same batches into a projection that does nothing (it
still advances its checkpoint per batch). Rates are events/s; the ratio is the
median of the rounds' ratios. The writers' fastest rate (``enqueue_many``,
about 28k events/s on this machine) is what the sealer must outrun.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from audit_data import populate
from common import Row, Settings, paired_rates, postgres_database, sqlite_database
from sqlalchemy import Connection

from jobledger import Ledger
from jobledger.catchup import CatchUp, Projection
from jobledger.records import Event
from jobledger.sealer import BATCH_SIZE, Sealer

NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


class Nothing(Projection):
    """The baseline: every event delivered, nothing written but the checkpoint."""

    name = "bench:nothing"

    def handle(self, event: Event, connection: Connection) -> None:
        pass


def run(settings: Settings) -> list[Row]:
    return measure(["postgresql"], settings.pick(200_000, 1_000_000), settings.pick(2, 3))


def measure(backends: list[str], count: int, rounds: int) -> list[Row]:
    rows = []
    for backend in backends:
        opened = postgres_database() if backend == "postgresql" else sqlite_database()
        with opened as url, Ledger(url) as ledger:
            started = time.perf_counter()
            populate([ledger.engine], count)
            print(f"  {count:,} events written in {time.perf_counter() - started:.0f} s")
            if backend == "postgresql":
                with ledger.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                ) as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE jobledger_events, jobledger_jobs")
            paired = paired_rates(rounds, _sealing(ledger, count), _bare(ledger, count))
            rows.append(
                Row(
                    f"sealing {count:,} events into the anchor, {NAMES[backend]}",
                    paired.ours,
                    paired.baseline,
                    "events/s",
                    baseline_name="bare catch-up reading the same events, same batches",
                    target="≥ writers' 28k events/s",
                    met=paired.ours >= 28_000,
                    note=f"medians of {rounds} alternating rounds, batches of {BATCH_SIZE}",
                    paired_ratio=paired.ratio,
                )
            )
    return rows


def _sealing(ledger: Ledger, count: int) -> Callable[[int], float]:
    def seal(_round: int) -> float:
        sealer = Sealer(ledger)
        sealer.catchup.reset()  # an empty anchor, the checkpoint at the start
        return _timed(sealer.catchup, count)

    return seal


def _bare(ledger: Ledger, count: int) -> Callable[[int], float]:
    def read(_round: int) -> float:
        runner = CatchUp(ledger, Nothing(), batch_size=BATCH_SIZE)
        runner.reset()
        return _timed(runner, count)

    return read


def _timed(runner: CatchUp, count: int) -> float:
    """Events/s of ``runner`` delivering ``count`` events.

    On a shared PostgreSQL server another tenant's open transaction holds every
    catch-up back (the horizon is server-wide): wait for none before starting,
    and keep delivering until all are in.
    """
    deadline = time.monotonic() + 600
    while runner.holdup() is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"held back: {runner.holdup()}")
        time.sleep(0.1)
    started = time.perf_counter()
    delivered = runner.run_once()
    while delivered < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"delivered {delivered} of {count} events")
        time.sleep(0.01)
        delivered += runner.run_once()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="postgresql")
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    for row in measure(backends, args.events, args.rounds):
        print(
            f"{row.benchmark}: {row.ours:,.0f} {row.unit} (bare catch-up {row.baseline:,.0f}; "
            f"ratio {row.paired_ratio:.2f}, median of {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
