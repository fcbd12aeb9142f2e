"""A real asyncio worker process for fault tests: claims a job, blocks its event loop.

    python -m tests.faults.aio_worker_process --database-url URL [--redis-url URL --prefix P]
        --ttl 1.0 --claim JOB --block SECONDS

Prints JSON lines on stdout: {"event": "claimed", "identity": ...}, then after the
block {"event": "unblocked", "presumed_dead": bool}, {"event": "completed"}.
The block is ``time.sleep`` inside a coroutine: the whole event loop stands still,
as it does when a task body calls blocking code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from jobledger.aio import AsyncLedger, AsyncRedisLiveness, AsyncSqlLiveness, AsyncWorker
from jobledger.aio.liveness import AsyncLiveness


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(options: argparse.Namespace) -> None:
    async with AsyncLedger(options.database_url) as ledger:
        liveness: AsyncLiveness
        if options.redis_url:
            liveness = AsyncRedisLiveness(options.redis_url, ttl=options.ttl, prefix=options.prefix)
        else:
            liveness = AsyncSqlLiveness(ledger, ttl=options.ttl)
        async with liveness, AsyncWorker(ledger, liveness) as worker:
            claim = await worker.claim(options.claim)
            say(event="claimed", identity=worker.identity)
            time.sleep(options.block)
            say(event="unblocked", presumed_dead=worker.presumed_dead)
            await worker.complete(claim)
            say(event="completed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url")
    parser.add_argument("--prefix", default="faults")
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--claim", required=True)
    parser.add_argument("--block", type=float, default=0.0)
    asyncio.run(main(parser.parse_args()))
