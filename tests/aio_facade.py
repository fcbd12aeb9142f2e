"""Running the async API from sync tests: an event loop on a thread, and facades.

A :class:`Facade` looks like the sync object its async twin mirrors: each
coroutine method runs on the loop thread and its result (or exception) comes
back to the caller, an async iterator comes back as a list's iterator. What
runs is the async code path; only the test's waiting is synchronous. This lets
the existing behavioural tests of the sync Ledger run unchanged on AsyncLedger.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class LoopThread:
    """An event loop running on a daemon thread until :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 120) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        # The default executor's threads (``asyncio.to_thread``) end with the loop's thread:
        # a test that forks (the audit's workers) asserts that no other thread runs.
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Facade:
    """``target``'s methods, awaited on ``loops``'s loop: a sync-looking twin."""

    def __init__(self, target: Any, loops: LoopThread) -> None:
        self._target, self._loops = target, loops

    @property
    def target(self) -> Any:
        return self._target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._loops.run(_awaited(result))
            if isinstance(result, AsyncIterator):
                return iter(self._loops.run(_collected(result)))
            return result

        return call

    def __enter__(self) -> Facade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _collected(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


class WorkerFacade(Facade):
    """An AsyncWorker behind a Worker's face: ``with`` starts it and stops it (timeout 0)."""

    def __enter__(self) -> WorkerFacade:
        self._loops.run(self._target.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._loops.run(self._target.stop(timeout=0))


class AsyncWorkers:
    """``Worker(ledger, liveness, **options)`` for tests written for the sync Worker, made
    of an AsyncLedger on the same database and the async twin of ``liveness``."""

    def __init__(self, loops: LoopThread, redis_url: str | None, prefix: str) -> None:
        self._loops, self._redis_url, self._prefix = loops, redis_url, prefix
        self._ledger: Any = None
        self._made: list[Any] = []

    def __call__(self, ledger: Any, liveness: Any, **options: Any) -> WorkerFacade:
        from jobledger import RedisLiveness
        from jobledger.aio import AsyncLedger, AsyncRedisLiveness, AsyncSqlLiveness, AsyncWorker

        url = ledger.engine.url.render_as_string(hide_password=False)

        async def made() -> Any:
            if self._ledger is None:
                self._ledger = AsyncLedger(url, heartbeat_interval=0)
            if isinstance(liveness, RedisLiveness):
                assert self._redis_url is not None
                twin: Any = AsyncRedisLiveness(
                    self._redis_url, ttl=liveness.ttl, prefix=self._prefix
                )
            else:
                twin = AsyncSqlLiveness(self._ledger, ttl=liveness.ttl)
            self._made.append(twin)
            return AsyncWorker(self._ledger, twin, **options)

        return WorkerFacade(self._loops.run(made()), self._loops)

    def close(self) -> None:
        async def closed() -> None:
            for twin in self._made:
                await twin.close()
            if self._ledger is not None:
                await self._ledger.close()

        self._loops.run(closed())
