"""A real worker process for fault tests: claims jobs, then holds or completes them.

    python -m tests.faults.worker_process --database-url URL [--redis-url URL --prefix P]
        --ttl 1.0 --claim a,b,c [--complete-after SECONDS] [--busy | --churn] [--heartbeat]
        [--signals]

Prints one JSON object per line on stdout: {"event": "claimed", "identity": ...,
"jobs": [...]}, then per job {"event": "completed"|"stale", "job": ...}, then
{"event": "done", "presumed_dead": bool}. Without --complete-after it holds its
claims until it is killed. With --churn it spends --complete-after enqueuing,
claiming and completing fresh jobs as fast as it can (a full-speed worker).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from jobledger import Ledger, RedisLiveness, SqlLiveness, Worker
from jobledger.errors import NotClaiming, StaleClaim
from jobledger.liveness import Liveness


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def pass_time(seconds: float, busy: bool, worker: Worker, heartbeat: bool, churn: bool) -> None:
    """Wait ``seconds`` of wall time, burning CPU in the main thread if ``busy``, or working
    fresh jobs back to back if ``churn``."""
    deadline = time.monotonic() + seconds
    churned = stale = 0
    while time.monotonic() < deadline:
        if churn and worker.claiming:
            job_id = f"{worker.identity}-churn-{churned}"
            worker.ledger.enqueue(job_id)
            try:
                worker.complete(worker.claim(job_id))
            except StaleClaim:
                stale += 1
            except NotClaiming:
                pass  # presumed dead since the check above: the test reads `done`
            churned += 1
        elif busy:
            sum(i * i for i in range(20_000))  # holds the GIL like real job code
        else:
            time.sleep(0.05)
        if heartbeat:
            for claim in worker.held:
                worker.heartbeat(claim)
    if churn:
        say(event="churned", jobs=churned, stale=stale)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url")
    parser.add_argument("--prefix", default="jobledger")
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--claim", default="")
    parser.add_argument("--complete-after", type=float)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--churn", action="store_true")
    parser.add_argument("--heartbeat", action="store_true")
    parser.add_argument("--signals", action="store_true", help="TSTP quiets, TERM stops (1 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    ledger = Ledger(args.database_url, heartbeat_interval=0.2)
    liveness: Liveness = (
        RedisLiveness(args.redis_url, ttl=args.ttl, prefix=args.prefix)
        if args.redis_url
        else SqlLiveness(ledger, ttl=args.ttl)
    )
    worker = Worker(ledger, liveness, handle_signals=args.signals, stop_timeout=1.0).start()
    claims = [worker.claim(job_id) for job_id in args.claim.split(",") if job_id]
    say(event="claimed", identity=worker.identity, jobs=[c.job_id for c in claims])
    if args.signals:
        while not worker.stopping:  # a Sidekiq-style loop: ends once SIGTERM began a stop
            time.sleep(0.05)
        worker.stop()  # waits for the stop SIGTERM started
        say(event="stopped", held=len(worker.held))
        return
    if args.complete_after is None:
        while True:
            time.sleep(3600)
    pass_time(args.complete_after, args.busy, worker, args.heartbeat, args.churn)
    for claim in claims:
        try:
            worker.complete(claim, result={"by": worker.identity})
            say(event="completed", job=claim.job_id)
        except StaleClaim as exc:
            say(event="stale", job=claim.job_id, error=str(exc))
    time.sleep(args.ttl / 2)  # let the refresh thread look at its record once more
    say(event="done", presumed_dead=worker.presumed_dead)
    worker.stop(timeout=0)


if __name__ == "__main__":
    main()
