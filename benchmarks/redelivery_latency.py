"""Redelivery latency: from a ``requeued`` event to the job back in RQ's queue in Redis.

A PostgreSQL ledger, a private redis-server as RQ's broker, and a
:class:`~jobledger.redelivery.Redeliverer` with the RQ target running in a
thread as ``jobledger recover --redeliver rq`` runs it (polling every 0.2 s).
Each job is enqueued through ``LedgerQueue``, taken out of RQ's queue (as if
RQ had lost it), claimed by an identity that "dies" and abandoned with the
default policy, which appends ``requeued``. A watcher blocks on the queue
(``BLPOP``) and stamps the moment the job arrives. Requeues come at random
intervals (50-400 ms) so they fall at every phase of the poll.

Latency is measured from the event's ``recorded_at`` (PostgreSQL's clock, the
start of the transaction that appended it; same machine, so it compares with
``time.time()``) to the ``BLPOP`` return.

    python benchmarks/redelivery_latency.py --requeues 200
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

import redis
from common import Row, Settings, percentile, postgres_database

from jobledger import Ledger, RecoveryPolicy
from jobledger.identity import new_identity
from jobledger.integrations.rq import LedgerQueue, RQTarget
from jobledger.redelivery import Redeliverer
from jobledger.testing import RedisServer

TARGET = 1.0


def run(settings: Settings) -> list[Row]:
    requeues = settings.pick(50, 200)
    latencies = measure(requeues)
    p99 = percentile(latencies, 0.99)
    return [
        Row(
            f"redelivery latency, requeued event to RQ's queue, {requeues} requeues, "
            "PostgreSQL (p99)",
            p99,
            None,
            "s",
            "—",
            f"p99 <= {TARGET:g} s",
            higher_is_better=False,
            met=p99 <= TARGET,
            note=(
                f"p50 {statistics.median(latencies):.3f} s, p99 {p99:.3f} s, "
                f"max {max(latencies):.3f} s; the redeliverer polls every 0.2 s"
            ),
        )
    ]


def measure(requeues: int) -> list[float]:
    with postgres_database("jobledger_bench_redelivery") as url, RedisServer() as server:
        connection = redis.Redis.from_url(server.url)
        ledger = Ledger(url)
        queue = LedgerQueue("bench", connection=connection, ledger=ledger)
        arrived: dict[str, float] = {}
        watcher = threading.Thread(target=_watch, args=(server.url, queue.key, requeues, arrived))
        watcher.start()
        target = RQTarget(server.url)
        redeliverer = Redeliverer(ledger, target)
        runner = threading.Thread(target=redeliverer.run_forever)
        runner.start()
        recorded: dict[str, float] = {}
        try:
            dead = new_identity()
            for _ in range(requeues):
                job = queue.enqueue("redelivery_latency.nothing")
                connection.lrem(queue.key, 0, job.id)  # RQ lost it
                claim = ledger.claim(job.id, dead)
                ledger.abandon(job.id, claim.token, "holder died", policy=RecoveryPolicy())
                recorded[job.id] = ledger.history(job.id)[-1].recorded_at.timestamp()
                time.sleep(random.uniform(0.05, 0.4))
            watcher.join(timeout=60)
        finally:
            redeliverer.stop()
            runner.join()
            target.close()
            ledger.close()
            connection.close()
    if len(arrived) < requeues:
        raise RuntimeError(f"only {len(arrived)} of {requeues} requeued jobs reached RQ")
    return [arrived[job_id] - recorded[job_id] for job_id in recorded]


def nothing() -> None:
    """The benchmark's RQ job (never run)."""


def _watch(url: str, key: str, count: int, arrived: dict[str, float]) -> None:
    """Stamp each job id as it lands on the queue ``key``."""
    with redis.Redis.from_url(url) as connection:
        while len(arrived) < count:
            popped = connection.blpop([key], timeout=30)
            if popped is None:
                return
            arrived[popped[1].decode()] = time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requeues", type=int, default=200)
    latencies = measure(parser.parse_args().requeues)
    print(
        f"redelivery: p50 {statistics.median(latencies):.3f} s, "
        f"p99 {percentile(latencies, 0.99):.3f} s, max {max(latencies):.3f} s "
        f"from the requeued event to RQ's queue over {len(latencies)} requeues"
    )


if __name__ == "__main__":
    main()
