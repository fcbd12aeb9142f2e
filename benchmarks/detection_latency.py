"""Detection latency after SIGKILL: how long past the TTL until the job is handed back.

Each round starts a batch of real worker processes (Redis liveness on a private
redis-server, ledger on PostgreSQL), each holding one job, lets the claims age,
SIGKILLs them at random moments, and polls until the recovery projector (default
settings: a sweep every second, grace = TTL) has abandoned each job. Latency is
measured from the kill, minus the TTL; it can be negative, because the key
was last refreshed up to TTL/3 before the kill. Ten bystander workers stay
alive throughout, so that a batch of kills is not mistaken for a mass false
death (which would rightly pause abandonment for one TTL).

    python benchmarks/detection_latency.py --kills 20 --ttl 3
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import Row, Settings, percentile, postgres_database

from jobledger import Ledger, RecoveryProjector, RedisLiveness, Worker
from jobledger.testing import RedisServer

HERE = Path(__file__).resolve()
BATCH = 4
BYSTANDERS = 10


def run(settings: Settings) -> list[Row]:
    kills, ttl = settings.pick(10, 20), 3.0
    latencies = measure(kills, ttl)
    p99 = percentile(latencies, 0.99)
    return [
        Row(
            f"detection latency after SIGKILL, {kills} kills, TTL {ttl:.0f} s (p99 past TTL)",
            p99,
            None,
            "s",
            "RQ: next row (rq_detection.py)",
            "p99 <= TTL + 1 s",
            higher_is_better=False,
            met=p99 <= 1.0,
            note=summary(latencies),
        )
    ]


def summary(latencies: list[float]) -> str:
    return (
        f"p50 {statistics.median(latencies):+.2f} s, p99 {percentile(latencies, 0.99):+.2f} s, "
        f"max {max(latencies):+.2f} s past TTL over {len(latencies)} kills"
    )


def measure(kills: int, ttl: float, interval: float = 1.0) -> list[float]:
    """Seconds past ``ttl`` from SIGKILL to the job leaving ``claimed``, per kill."""
    latencies: list[float] = []
    with postgres_database("jobledger_latency") as url, RedisServer() as redis:
        ledger = Ledger(url)
        liveness = RedisLiveness(redis.url, ttl=ttl)
        liveness.incarnation()  # create the epoch now: the start-up pause ends in one TTL
        projector = RecoveryProjector(ledger, liveness, interval=interval)
        sweeper = threading.Thread(target=projector.run_forever, kwargs={"handle_signals": False})
        sweeper.start()
        ledger.enqueue_many([f"bystander-{n}" for n in range(BYSTANDERS)])
        bystanders = [
            _start_worker(url, redis.url, ttl, f"bystander-{n}") for n in range(BYSTANDERS)
        ]
        time.sleep(ttl + interval)
        paused_at_start = projector.counters.paused_sweeps  # the start-up pause of a new Redis
        try:
            for batch in range(0, kills, BATCH):
                size = min(BATCH, kills - batch)
                latencies += _one_round(
                    ledger, url, redis.url, ttl, [f"k{batch + i}" for i in range(size)]
                )
                print(f"  {len(latencies)}/{kills} kills: {summary(latencies)}", file=sys.stderr)
            if projector.counters.paused_sweeps > paused_at_start:
                raise RuntimeError("abandonment was paused: the measurement is not valid")
        finally:
            projector.stop()
            sweeper.join()
            for bystander in bystanders:
                bystander.kill()
                bystander.wait()
            ledger.close()
    return latencies


def _one_round(
    ledger: Ledger, url: str, redis_url: str, ttl: float, jobs: list[str]
) -> list[float]:
    ledger.enqueue_many(jobs)
    workers = [_start_worker(url, redis_url, ttl, job) for job in jobs]
    time.sleep(ttl * 0.5 + random.random())  # claims age; kills land at random sweep phases
    killed_at: dict[str, float] = {}
    for job, worker in zip(jobs, workers, strict=True):
        time.sleep(random.random() * 0.3)
        worker.send_signal(signal.SIGKILL)
        killed_at[job] = time.monotonic()
    detected: dict[str, float] = {}
    deadline = time.monotonic() + ttl * 3 + 10
    while len(detected) < len(jobs) and time.monotonic() < deadline:
        for job in jobs:
            if job not in detected and ledger.status(job).state != "claimed":
                detected[job] = time.monotonic()
        time.sleep(0.02)
    for worker in workers:
        worker.wait()
    missing = set(jobs) - set(detected)
    if missing:
        raise RuntimeError(f"never recovered: {sorted(missing)}")
    return [detected[job] - killed_at[job] - ttl for job in jobs]


def _start_worker(url: str, redis_url: str, ttl: float, job: str) -> subprocess.Popen[str]:
    args = [sys.executable, str(HERE), "--worker", json.dumps([url, redis_url, ttl, job])]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "claimed":
        raise RuntimeError("worker did not claim its job")
    return process


def _worker(url: str, redis_url: str, ttl: float, job: str) -> None:
    ledger = Ledger(url)
    with Worker(ledger, RedisLiveness(redis_url, ttl=ttl)) as worker:
        worker.claim(job)
        print("claimed", flush=True)
        while True:
            time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*json.loads(args.worker))
        return
    latencies = measure(args.kills, args.ttl, args.interval)
    print(summary(latencies))
    print("all (s past TTL):", " ".join(f"{x:+.2f}" for x in sorted(latencies)))


if __name__ == "__main__":
    main()
