"""RQ throughput with and without jobledger: burst workers on trivial jobs, side by side.

Each round enqueues the same number of trivial jobs and runs one
``rq worker --burst`` process over them: the plain ``rq.Worker`` on jobs from a
plain ``rq.Queue`` (the baseline), and ``jobledger.integrations.rq.LedgerWorker``
on jobs from ``LedgerQueue`` (every job recorded: enqueued, then claimed and
completed by the RQ worker around the work horse it forks for the job; the
worker registers in Redis liveness once). The rate is the jobs over the time
from the first job's start to the last one's end (RQ's timestamps), so that a
worker's start-up, paid once, is left out; the rate from the process's start to
its exit is printed beside it. RQ's broker is a
private ``redis-server``, which also holds the liveness records; the ledger is a
scratch PostgreSQL database (and a SQLite file). Rounds alternate (ours,
baseline, baseline, ours, ...); enqueueing is not timed.

    python benchmarks/rq_overhead.py --jobs 300 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from common import Paired, Row, Settings, paired_rates, postgres_database, sqlite_database
from rq import Queue
from rq.job import Job

from jobledger import Ledger
from jobledger.integrations.rq import LedgerQueue
from jobledger.liveness import RedisLiveness
from jobledger.testing import RedisServer

HERE = Path(__file__).resolve().parent
RQ = Path(sys.executable).parent / "rq"
TARGET = 0.8
#: Liveness TTL of the workers (seconds); the jobs are far shorter.
TTL = 5.0


def run(settings: Settings) -> list[Row]:
    jobs = settings.pick(100, 300)
    rounds = settings.pick(2, 4)
    rows = []
    for backend, database in (("PostgreSQL", postgres_database), ("SQLite", sqlite_database)):
        with database() as url:
            paired = measure(url, jobs, rounds)
        rows.append(
            Row(
                f"RQ burst worker, {jobs} trivial jobs, every job recorded, {backend}",
                paired.ours,
                paired.baseline,
                "jobs/s",
                "plain RQ 3 worker, same jobs",
                f"≥ {TARGET:g}x",
                met=paired.ratio >= TARGET,
                note=f"{paired.note()}; Redis liveness, a fork per job as RQ does",
                paired_ratio=paired.ratio,
            )
        )
    return rows


def measure(database_url: str, jobs: int, rounds: int) -> Paired:
    with RedisServer() as server:
        connection = redis.Redis.from_url(server.url)
        try:
            _age(server.url)
            with Ledger(database_url) as ledger:

                def ours(number: int) -> float:
                    queue = LedgerQueue(f"ours{number}", connection=connection, ledger=ledger)
                    return _burst(server.url, queue, jobs, database_url)

                def baseline(number: int) -> float:
                    queue = Queue(f"plain{number}", connection=connection)
                    return _burst(server.url, queue, jobs, None)

                return paired_rates(rounds, ours, baseline)
        finally:
            connection.close()


def _age(redis_url: str) -> None:
    """Let the fresh liveness backend grow a TTL old, as a production Redis is.

    Until then every worker logs that it will not take jobs over (its backend may
    have just forgotten live processes): a start-up cost that is not the steady state.
    """
    liveness = RedisLiveness(redis_url, ttl=TTL)
    try:
        time.sleep(max(0.0, TTL - (liveness.incarnation().age or 0.0) + 0.1))
    finally:
        liveness.close()


def _burst(redis_url: str, queue: Queue, jobs: int, database_url: str | None) -> float:
    """Enqueue ``jobs`` trivial jobs, run one burst worker over them; its jobs/s."""
    enqueued = [queue.enqueue("rq_noop.nothing") for _ in range(jobs)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    args = [str(RQ), "worker", "--burst", "--url", redis_url, "--quiet"]
    if database_url is not None:
        args += ["--worker-class", "jobledger.integrations.rq.LedgerWorker"]
        env |= {
            "JOBLEDGER_DATABASE_URL": database_url,
            "JOBLEDGER_REDIS_URL": redis_url,
            "JOBLEDGER_TTL": str(TTL),
        }
    started = time.perf_counter()
    done = subprocess.run(
        [*args, queue.name],
        check=False,
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=600,
    )
    spent = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"rq worker exited with {done.returncode}: {done.stderr[-2000:]}")
    ran = [Job.fetch(job.id, connection=queue.connection) for job in enqueued]
    finished = sum(job.get_status() == "finished" for job in ran)
    if finished != jobs:
        raise RuntimeError(f"only {finished} of {jobs} jobs finished: {done.stderr[-2000:]}")
    # From the first job's start to the last one's end, by RQ's own clock: the
    # worker's start-up (imports, connections; jobledger's cost ~0.3 s once) is left out.
    working = max(job.ended_at for job in ran) - min(job.started_at for job in ran)
    rate = (jobs - 1) / working.total_seconds()
    side = "LedgerWorker" if database_url else "plain RQ"
    print(
        f"  {side}: {rate:.1f} jobs/s working, {jobs / spent:.1f} jobs/s from start to exit",
        file=sys.stderr,
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite ledger, not PostgreSQL")
    args = parser.parse_args()
    database = sqlite_database if args.sqlite else postgres_database
    with database() as url:
        paired = measure(url, args.jobs, args.rounds)
    print(
        f"{'SQLite' if args.sqlite else 'PostgreSQL'}: LedgerWorker {paired.ours:.1f} jobs/s, "
        f"plain RQ {paired.baseline:.1f} jobs/s, ratio {paired.ratio:.2f}x "
        f"({paired.note()})"
    )


if __name__ == "__main__":
    main()
