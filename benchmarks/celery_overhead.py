"""Celery throughput with and without the ledger recording every task, side by side.

A private redis-server is Celery's broker (and the ledger's liveness backend); the
ledger is a scratch PostgreSQL database. Each round publishes the same number of
trivial tasks to a fresh queue, then starts a real ``celery worker`` (prefork,
concurrency 2) on it; each task appends its finishing time to a Redis list. A
round's rate is the tasks between the 20th and the last finish over that time, so
the worker's start-up is not counted. Rounds alternate (plain, recorded, recorded,
plain, ...); the ratio is the median of the per-round ratios. The recorded side
publishes through ``record(app)`` too (its ``enqueued`` events are written before
the worker starts, so they are not in the rate).

    python benchmarks/celery_overhead.py --tasks 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
from celery import Celery

HERE = Path(__file__).resolve().parent
CELERY = Path(sys.executable).parent / "celery"
TARGET = 0.8
SKIPPED = 20  # finishes before the measured span starts (worker start-up)

app = Celery("jl_bench", broker=os.environ.get("JL_BENCH_BROKER", "memory://"))
app.conf.update(
    task_ignore_result=True,
    worker_enable_remote_control=False,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
)
if os.environ.get("JL_BENCH_RECORD") == "1":
    from jobledger.integrations.celery import record

    record(app)

_finished: redis.Redis | None = None


@app.task(name="bench.trivial")
def trivial(key: str) -> None:
    global _finished
    if _finished is None:
        _finished = redis.Redis.from_url(os.environ["JL_BENCH_BROKER"])
    _finished.rpush(key, time.time())


def run(settings: object) -> list[object]:
    from common import Row, Settings

    assert isinstance(settings, Settings)
    tasks, rounds = settings.pick(600, 2000), settings.pick(1, 2)
    plain, recorded, ratios = measure(tasks, rounds)
    ratio = statistics.median(ratios)
    return [
        Row(
            f"Celery throughput, {tasks} trivial tasks, prefork, 2 children, Redis broker, "
            "PostgreSQL ledger",
            statistics.median(recorded),
            statistics.median(plain),
            "tasks/s",
            "the same Celery worker without record(app)",
            f"≥ {TARGET:g}x",
            met=ratio >= TARGET,
            paired_ratio=ratio,
            note=f"{rounds * 2} alternating rounds; ratio = median of per-round ratios",
        )
    ]


def measure(tasks: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    from common import postgres_database

    from jobledger.testing import RedisServer

    plain: list[float] = []
    recorded: list[float] = []
    with postgres_database("jobledger_bench_celery") as url, RedisServer() as server:
        env = {
            **os.environ,
            "JL_BENCH_BROKER": server.url,
            "JOBLEDGER_DATABASE_URL": url,
            "JOBLEDGER_REDIS_URL": server.url,
            "JOBLEDGER_TTL": "5",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
        }
        for number in range(rounds):
            order = [False, True] if number % 2 == 0 else [True, False]
            for record_it in order:
                rate = _round(env, tasks, record_it, f"r{number}{int(record_it)}")
                (recorded if record_it else plain).append(rate)
    ratios = [r / p for r, p in zip(recorded, plain, strict=True)]
    return plain, recorded, ratios


def _round(env: dict[str, str], tasks: int, record_it: bool, name: str) -> float:
    side = {**env, "JL_BENCH_RECORD": "1" if record_it else "0"}
    queue = f"bench-{name}"
    subprocess.run(
        [sys.executable, __file__, "publish", queue, str(tasks)], env=side, check=True, cwd=HERE
    )
    args = [str(CELERY), "-A", "celery_overhead", "worker", "--pool", "prefork"]
    args += ["--concurrency", "2", "-Q", queue, "--without-gossip", "--without-mingle"]
    args += ["--without-heartbeat", "--loglevel", "ERROR"]
    worker = subprocess.Popen(args, env=side, cwd=HERE, stdout=subprocess.DEVNULL)
    try:
        finished = redis.Redis.from_url(env["JL_BENCH_BROKER"])
        deadline = time.monotonic() + 600
        done = f"done:{queue}"
        while finished.llen(done) < tasks:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"round {name}: only {finished.llen(done)} of {tasks} ran")
            time.sleep(0.2)
        stamps = sorted(float(s) for s in finished.lrange(done, 0, -1))
        finished.close()
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return (tasks - SKIPPED) / (stamps[-1] - stamps[SKIPPED - 1])


def _publish(queue: str, tasks: int) -> None:
    for _ in range(tasks):
        app.send_task("bench.trivial", args=[f"done:{queue}"], queue=queue)


def main() -> None:
    if sys.argv[1:2] == ["publish"]:
        _publish(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    plain, recorded, ratios = measure(options.tasks, options.rounds)
    print(
        f"celery: plain {statistics.median(plain):.0f} tasks/s, recorded "
        f"{statistics.median(recorded):.0f} tasks/s, ratio {statistics.median(ratios):.2f} "
        f"(rounds: plain {[round(p) for p in plain]}, recorded {[round(r) for r in recorded]})"
    )


if __name__ == "__main__":
    main()
