"""Recovery sweep cost: 100k claimed jobs held by 5k live processes, Redis liveness, PostgreSQL.

A steady-state sweep (nobody dead) is one grouped query over the claimed jobs,
one pipelined PTTL round trip over every holder and known process, and the
mass-death bookkeeping. The jobs are put in the claimed state with one UPDATE
of the projection after ``enqueue_many`` (the sweep reads only the projection
and Redis; claiming 100k jobs one by one would only make the setup slow).

    python benchmarks/recovery_sweep.py
"""

from __future__ import annotations

import statistics
import time

from common import Row, Settings, postgres_database, register_alive
from sqlalchemy import text

from jobledger import Ledger, RecoveryProjector, RedisLiveness
from jobledger.identity import new_identity
from jobledger.testing import RedisServer

JOBS, HOLDERS = 100_000, 5_000


def run(settings: Settings) -> list[Row]:
    sweeps = settings.pick(5, 15)
    median, slowest = measure(sweeps)
    return [
        Row(
            f"recovery sweep, {JOBS // 1000}k claimed jobs, {HOLDERS // 1000}k holders (median)",
            median * 1000,
            None,
            "ms",
            "—",
            "<= 100 ms",
            higher_is_better=False,
            met=median <= 0.1,
            note=f"slowest of {sweeps}: {slowest * 1000:.0f} ms",
        )
    ]


def measure(sweeps: int) -> tuple[float, float]:
    with postgres_database("jobledger_sweep") as url, RedisServer() as redis:
        ledger = Ledger(url)
        liveness = RedisLiveness(redis.url, ttl=600)
        holders = [new_identity(host=f"host-{n % 50}", pid=1000 + n) for n in range(HOLDERS)]
        register_alive(liveness, holders)
        _claimed_jobs(ledger, holders)
        projector = RecoveryProjector(ledger, liveness)
        projector.run_once()  # warm caches and the baseline of live processes
        times = []
        for _ in range(sweeps):
            started = time.perf_counter()
            assert projector.run_once() == []
            times.append(time.perf_counter() - started)
        ledger.close()
        liveness.close()
    return statistics.median(times), max(times)


def _claimed_jobs(ledger: Ledger, holders: list[str]) -> None:
    ledger.enqueue_many(f"job-{n:06d}" for n in range(JOBS))
    values = ", ".join(f"('{h}', {i})" for i, h in enumerate(holders))
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobledger_jobs j SET state = 'claimed', claimed_by = h.identity, "
                "claim_token = 2, attempt = 1, claimed_at = now() "
                f"FROM (VALUES {values}) AS h(identity, n) "
                f"WHERE substr(j.job_id, 5)::int % {HOLDERS} = h.n"
            )
        )
        conn.execute(text("ANALYZE jobledger_jobs"))


def main() -> None:
    median, slowest = measure(15)
    print(
        f"recovery sweep: median {median * 1000:.1f} ms, slowest {slowest * 1000:.1f} ms "
        f"({JOBS} claimed jobs, {HOLDERS} live holders)"
    )


if __name__ == "__main__":
    main()
