"""False abandons under load: live workers holding jobs while the CPU is saturated.

Several real worker processes hold jobs and burn CPU in their main thread (as job
code does), extra processes spin on both cores, and the recovery projector
sweeps every second with a short TTL. Every abandon of a live worker's job is a
false abandon; the expected count is zero.

    python benchmarks/false_abandon.py --seconds 60 --ttl 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import Row, Settings, postgres_database

from jobledger import Ledger, RecoveryProjector, RedisLiveness, Worker
from jobledger.testing import RedisServer

HERE = Path(__file__).resolve()
WORKERS, JOBS_EACH, HOGS = 4, 5, 3


def run(settings: Settings) -> list[Row]:
    seconds, ttl = settings.pick(20, 60), 1.0
    abandoned, held = measure(seconds, ttl)
    return [
        Row(
            f"false abandons, {WORKERS} live busy workers, {HOGS} CPU hogs, {seconds} s, TTL 1 s",
            float(abandoned),
            None,
            "jobs",
            "—",
            "0",
            higher_is_better=False,
            met=abandoned == 0,
            note=f"{held} jobs held throughout; {seconds / ttl:.0f} TTLs",
        )
    ]


def measure(seconds: float, ttl: float) -> tuple[int, int]:
    """(jobs abandoned, jobs held) after ``seconds`` of load."""
    with postgres_database("jobledger_false_abandon") as url, RedisServer() as redis:
        ledger = Ledger(url)
        liveness = RedisLiveness(redis.url, ttl=ttl)
        liveness.incarnation()
        projector = RecoveryProjector(ledger, liveness, grace=0)
        sweeper = threading.Thread(target=projector.run_forever, kwargs={"handle_signals": False})
        sweeper.start()
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(HOGS)]
        workers = []
        try:
            for n in range(WORKERS):
                jobs = [f"w{n}-{j}" for j in range(JOBS_EACH)]
                ledger.enqueue_many(jobs)
                args = json.dumps([url, redis.url, ttl, jobs, seconds])
                workers.append(subprocess.Popen([sys.executable, str(HERE), "--worker", args]))
            for worker in workers:
                worker.wait(timeout=seconds + 60)
        finally:
            for process in hogs + workers:
                process.kill()
                process.wait()
            projector.stop()
            sweeper.join()
        completed = sum(1 for s in ledger.jobs() if s.state == "completed")
        ledger.close()
    return projector.counters.abandoned, completed


def _worker(url: str, redis_url: str, ttl: float, jobs: list[str], seconds: float) -> None:
    ledger = Ledger(url)
    with Worker(ledger, RedisLiveness(redis_url, ttl=ttl)) as worker:
        claims = [worker.claim(job) for job in jobs]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(i * i for i in range(50_000))  # job code holding the GIL
        for claim in claims:
            worker.complete(claim)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*json.loads(args.worker))
        return
    abandoned, completed = measure(args.seconds, args.ttl)
    print(
        f"false abandons: {abandoned}; jobs completed by their live holders: {completed} "
        f"of {WORKERS * JOBS_EACH} ({args.seconds:.0f} s, TTL {args.ttl} s, {HOGS} CPU hogs)"
    )


if __name__ == "__main__":
    main()
