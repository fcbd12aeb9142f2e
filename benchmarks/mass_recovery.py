"""Ending many dead claims: a recovery sweep after a mass death, PostgreSQL, Redis liveness.

Every job is claimed through the ledger by one of 50 processes that never registered (dead
to any projector), and one sweep (``RecoveryProjector.run_once``, grace 0) abandons and
requeues them all. It runs with the default ``abandon_concurrency`` (4 on PostgreSQL)
and with 1, one claim after another, in rounds whose order flips, each on a fresh
database. The second is how the projector worked before; it is shown for the speed-up, not
as a target (there is no bare-system way to end a claim with its history).

    python benchmarks/mass_recovery.py                 # 5,000 dead claims, 3 rounds
    python benchmarks/run.py --only mass_recovery
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from common import Row, Settings, postgres_database, register_alive

from jobledger import Ledger, RecoveryProjector, RedisLiveness
from jobledger.identity import new_identity
from jobledger.recovery import DEFAULT_ABANDON_CONCURRENCY
from jobledger.testing import RedisServer

HOLDERS = 50


def run(settings: Settings) -> list[Row]:
    claims, rounds = settings.pick(1_000, 5_000), settings.pick(1, 3)
    ours, serial = measure(claims, rounds)
    return [
        Row(
            f"recovery sweep ending {claims:,} dead claims (abandoned and requeued)",
            statistics.median(ours),
            statistics.median(serial),
            "jobs/s",
            "the same sweep, one claim at a time (abandon_concurrency=1)",
            "(comparison)",
            note=f"abandon_concurrency={DEFAULT_ABANDON_CONCURRENCY}; median of {rounds} rounds",
        )
    ]


def measure(claims: int, rounds: int) -> tuple[list[float], list[float]]:
    """Jobs/s of each round: with the default concurrency, and one claim at a time."""
    logging.getLogger("jobledger.recovery").setLevel(logging.ERROR)  # a line per job otherwise
    ours: list[float] = []
    serial: list[float] = []
    with RedisServer() as redis:
        for number in range(rounds):
            order = [(None, ours), (1, serial)]
            for concurrency, rates in order if number % 2 == 0 else order[::-1]:
                rates.append(_sweep_rate(redis.url, claims, concurrency))
    return ours, serial


def _sweep_rate(redis_url: str, claims: int, concurrency: int | None) -> float:
    with postgres_database("jobledger_mass_recovery") as url, Ledger(url) as ledger:
        holders = [new_identity(host="gone") for _ in range(HOLDERS)]
        ids = [f"job-{n:06d}" for n in range(claims)]
        ledger.enqueue_many(ids)
        for n, job_id in enumerate(ids):
            ledger.claim(job_id, holders[n % HOLDERS])
        liveness = RedisLiveness(redis_url, ttl=15)
        register_alive(liveness, [])  # no one: only a Redis that has been up for an hour
        projector = RecoveryProjector(ledger, liveness, grace=0, abandon_concurrency=concurrency)
        started = time.perf_counter()
        ended = len(projector.run_once())
        elapsed = time.perf_counter() - started
        liveness.client.flushall()
        liveness.close()
    if ended != claims:
        raise RuntimeError(f"the sweep ended {ended} of {claims} dead claims")
    return claims / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ours, serial = measure(args.claims, args.rounds)
    for name, rates in (
        (f"concurrency {DEFAULT_ABANDON_CONCURRENCY}", ours),
        ("one at a time", serial),
    ):
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"{name}: {statistics.median(rates):,.0f} jobs/s (rounds: {shown})")
    print(f"ratio: {statistics.median(o / s for o, s in zip(ours, serial, strict=True)):.2f}x")


if __name__ == "__main__":
    main()
