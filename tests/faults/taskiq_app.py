"""A taskiq app for the fault tests: a Redis list broker recorded by LedgerMiddleware.

Configured from the environment (the test sets it for itself and the worker process):
JOBLEDGER_DATABASE_URL, JOBLEDGER_REDIS_URL (liveness and broker), JOBLEDGER_TTL,
JOBLEDGER_TEST_TASKIQ_QUEUE, JOBLEDGER_TEST_TASKIQ_PREFIX.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from taskiq_redis import ListQueueBroker

from jobledger.integrations.taskiq import LedgerMiddleware

broker = ListQueueBroker(
    os.environ["JOBLEDGER_REDIS_URL"], queue_name=os.environ["JOBLEDGER_TEST_TASKIQ_QUEUE"]
).with_middlewares(
    LedgerMiddleware(
        os.environ["JOBLEDGER_DATABASE_URL"],
        redis_url=os.environ["JOBLEDGER_REDIS_URL"],
        ttl=float(os.environ.get("JOBLEDGER_TTL", "1")),
        prefix=os.environ["JOBLEDGER_TEST_TASKIQ_PREFIX"],
    )
)


@broker.task
async def add(a: int, b: int) -> int:
    return a + b


@broker.task
async def boom() -> None:
    raise ValueError("boom")


@broker.task
async def hang(marker: str) -> None:
    """Say which process runs it (a line per run), then never finish."""
    with Path(marker).open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    await asyncio.sleep(600)
