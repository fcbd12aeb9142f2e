"""The web overview with many live processes: how long `/` takes and how much it sends.

A small SQLite ledger, ``--processes`` live processes registered in a private Redis (one
pipelined write), and the overview page fetched ``--requests`` times through the web app
(Starlette's test client: no network, so the figure is the server's work). The page lists
the first 100 live processes and counts the rest; `/api/processes` lists every one.

    python benchmarks/overview_processes.py                  # 25,000 live processes
    python benchmarks/overview_processes.py --processes 1000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import register_alive
from starlette.testclient import TestClient

from jobledger import Ledger, RedisLiveness
from jobledger.identity import new_identity
from jobledger.testing import RedisServer
from jobledger.web.serve import build


def measure(processes: int, requests: int) -> tuple[float, int]:
    """The median time of ``GET /`` in seconds, and the page's size in bytes."""
    with (
        tempfile.TemporaryDirectory() as directory,
        RedisServer() as redis,
        Ledger(f"sqlite:///{Path(directory) / 'overview.db'}") as ledger,
    ):
        ledger.migrate()
        ledger.enqueue_many(f"job-{n}" for n in range(100))
        liveness = RedisLiveness(redis.url, ttl=600)
        register_alive(
            liveness, [new_identity(host=f"host-{n % 50}", pid=1000 + n) for n in range(processes)]
        )
        client = TestClient(build(ledger, liveness, catch_up=False, verify_every=0).app)
        client.get("/")  # warm-up
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            page = client.get("/")
            times.append(time.perf_counter() - started)
        liveness.close()
    return statistics.median(times), len(page.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=25_000)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    seconds, size = measure(args.processes, args.requests)
    print(
        f"GET / with {args.processes:,} live processes: {seconds * 1000:,.0f} ms "
        f"(median of {args.requests}), {size:,} bytes"
    )


if __name__ == "__main__":
    main()
