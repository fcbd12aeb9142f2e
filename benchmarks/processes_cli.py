"""`jobledger processes` with many live holders of many claims: how long the command takes.

A scratch PostgreSQL database whose projection holds ``--claims`` claimed jobs, spread
evenly over ``--processes`` holders (rows written by ``generate_series``: only the jobs
table is read by this command), every holder registered alive in a private Redis. Each
command runs as a new process (start-up included), ``--runs`` times, and prints its wall
time and the bytes it wrote to stdout.

    python benchmarks/processes_cli.py                    # 25,000 live holders of 1M claims
    python benchmarks/processes_cli.py --claims 100000 --processes 5000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from common import postgres_database, register_alive
from sqlalchemy import create_engine, text

from jobledger import RedisLiveness
from jobledger.testing import RedisServer

COMMANDS = (
    ["processes"],
    ["processes", "--json"],
    ["processes", "--limit", "0"],
    ["processes", "--limit", "0", "--json"],
)

# Holder n's identity, built the same way in SQL (the claims) and in Python (the records).
_HOLDER_SQL = "'host-' || (h % 50) || ':' || (1000 + h) || ':' || lpad(to_hex(h), 16, '0')"
_FILL = f"""
INSERT INTO jobledger_jobs (job_id, queue, state, version, attempt, claimed_by, claim_token,
                            enqueued_at, claimed_at, updated_at, last_hash)
SELECT 'job-' || lpad(g::text, 8, '0'), 'q', 'claimed', 2, 1, {_HOLDER_SQL}, 2,
       now(), now(), now(), repeat('a', 64)
FROM generate_series(1, :claims) g, LATERAL (SELECT g % :processes AS h) holder
"""


def _holder(n: int) -> str:
    return f"host-{n % 50}:{1000 + n}:{n:016x}"


def measure(claims: int, processes: int, runs: int) -> None:
    with postgres_database("jobledger_processes_bench") as url, RedisServer() as redis:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(_FILL), {"claims": claims, "processes": processes})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobledger_jobs"))
        engine.dispose()
        liveness = RedisLiveness(redis.url, ttl=3600)
        register_alive(liveness, [_holder(n) for n in range(processes)])
        liveness.close()
        env = {**os.environ, "JOBLEDGER_DATABASE_URL": url, "JOBLEDGER_REDIS_URL": redis.url}
        for args in COMMANDS:
            for _ in range(runs):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "jobledger.cli", *args],
                    env=env,
                    capture_output=True,
                    check=True,
                )
                seconds = time.perf_counter() - started
                print(f"jobledger {' '.join(args)}: {seconds:.2f} s, {len(done.stdout):,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=25_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    measure(args.claims, args.processes, args.runs)


if __name__ == "__main__":
    main()
