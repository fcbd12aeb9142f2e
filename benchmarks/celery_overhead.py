"""Celery throughput with and without the ledger recording every task, side by side.

A private redis-server is Celery's broker (and the ledger's liveness backend); the
ledger is a scratch PostgreSQL database. Each round publishes the same number of
trivial tasks to a fresh queue, then starts a real ``celery worker`` (prefork,
concurrency 2) on it; each task appends its finishing time to a Redis list. A
round's rate is the tasks between the 20th and the last finish over that time, so
the worker's start-up is not counted. Three sides take turns, their order rotating
each round: plain Celery; ``record(app)``; and the limit, each task's claim and
completion sent as one raw psycopg CTE each (``claim_complete.LimitPostgres``, in
``task_prerun`` and ``task_postrun``), the least any durable record of a task's
start and end costs. Ratios are medians of per-round ratios. The recorded side
publishes through ``record(app)`` too, the limit's jobs are enqueued in the ledger's
tables before its publish (neither is in the rate: the worker starts after).

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
from typing import Any

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
SIDE = os.environ.get("JL_BENCH_SIDE", "plain")
if SIDE == "recorded":
    from jobledger.integrations.celery import record

    record(app)
elif SIDE == "limit":
    from celery import signals

    _limit: Any = None

    @signals.worker_process_init.connect
    def _connect(**_: Any) -> None:
        global _limit
        from claim_complete import LimitPostgres

        _limit = LimitPostgres(os.environ["JOBLEDGER_DATABASE_URL"], {})

    @signals.task_prerun.connect
    def _claim(task_id: str, **_: Any) -> None:
        _limit.claim(task_id)

    @signals.task_postrun.connect
    def _complete(task_id: str, **_: Any) -> None:
        _limit.complete(task_id)


_finished: redis.Redis | None = None


@app.task(name="bench.trivial")
def trivial(key: str) -> None:
    global _finished
    if _finished is None:
        _finished = redis.Redis.from_url(os.environ["JL_BENCH_BROKER"])
    _finished.rpush(key, time.time())


SIDES = ("plain", "recorded", "limit")


def run(settings: object) -> list[object]:
    from common import Row, Settings

    assert isinstance(settings, Settings)
    tasks, rounds = settings.pick(600, 2000), settings.pick(1, 2)
    rates = measure(tasks, rounds)
    name = f"Celery throughput, {tasks} trivial tasks, prefork, 2 children, Redis broker"
    note = f"{rounds * 3} rounds, the sides in turn; ratio = median of per-round ratios"
    rows = []
    for side, baseline, baseline_is in (
        ("recorded", "plain", "the same Celery worker without record(app)"),
        ("limit", "plain", "the same Celery worker without record(app)"),
        ("recorded", "limit", LIMIT),
    ):
        ratio = statistics.median(_ratios(rates, side, baseline))
        what = "PostgreSQL ledger" if side == "recorded" else f"{LIMIT} (no jobledger)"
        target = TARGET if side == "recorded" else None
        rows.append(
            Row(
                f"{name}, {what}",
                statistics.median(rates[side]),
                statistics.median(rates[baseline]),
                "tasks/s",
                baseline_is,
                f"≥ {target:g}x" if target else "",
                met=ratio >= target if target else None,
                paired_ratio=ratio,
                note=note,
            )
        )
    return rows


#: The limit of recording a task: its claim and its completion, one CTE each.
LIMIT = "each task's claim and completion as one raw psycopg CTE each, autocommit"


def _ratios(rates: dict[str, list[float]], side: str, baseline: str) -> list[float]:
    return [r / b for r, b in zip(rates[side], rates[baseline], strict=True)]


def measure(tasks: int, rounds: int) -> dict[str, list[float]]:
    from common import postgres_database

    from jobledger.testing import RedisServer

    rates: dict[str, list[float]] = {side: [] for side in SIDES}
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
            shift = number % len(SIDES)
            for side in SIDES[shift:] + SIDES[:shift]:
                rates[side].append(_round(env, tasks, side, f"r{number}-{side}"))
    return rates


def _round(env: dict[str, str], tasks: int, side: str, name: str) -> float:
    env = {**env, "JL_BENCH_SIDE": side}
    queue = f"bench-{name}"
    subprocess.run(
        [sys.executable, __file__, "publish", queue, str(tasks)], env=env, check=True, cwd=HERE
    )
    args = [str(CELERY), "-A", "celery_overhead", "worker", "--pool", "prefork"]
    args += ["--concurrency", "2", "-Q", queue, "--without-gossip", "--without-mingle"]
    args += ["--without-heartbeat", "--loglevel", "ERROR"]
    worker = subprocess.Popen(args, env=env, cwd=HERE, stdout=subprocess.DEVNULL)
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
    task_ids = [f"{queue}-{number}" for number in range(tasks)]
    if SIDE == "limit":  # the jobs the limit's claims find, enqueued as the ledger would
        from jobledger import Ledger

        with Ledger(os.environ["JOBLEDGER_DATABASE_URL"]) as ledger:
            ledger.enqueue_many(task_ids, queue=queue)
    for task_id in task_ids:
        app.send_task("bench.trivial", args=[f"done:{queue}"], queue=queue, task_id=task_id)


def main() -> None:
    if sys.argv[1:2] == ["publish"]:
        _publish(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    rates = measure(options.tasks, options.rounds)
    medians = ", ".join(f"{side} {statistics.median(rates[side]):.0f}" for side in SIDES)
    rounds = {side: [round(rate) for rate in rates[side]] for side in SIDES}
    print(f"celery tasks/s: {medians} (rounds: {rounds})")
    for side, baseline in (("recorded", "plain"), ("limit", "plain"), ("recorded", "limit")):
        ratio = statistics.median(_ratios(rates, side, baseline))
        print(f"  {side} / {baseline}: {ratio:.2f}")


if __name__ == "__main__":
    main()
