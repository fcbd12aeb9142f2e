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
