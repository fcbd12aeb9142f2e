"""Liveness for asyncio: the protocol of :mod:`jobledger.liveness`, awaited.

Every backend here also names its *refresher*: the sync twin of itself (same
place, same TTL, same keys or leases) that an :class:`~jobledger.aio.worker.AsyncWorker`
refreshes from a thread of its own. The refresh must never depend on the event
loop: a task body that blocks the loop for minutes would otherwise stop it, and
a live process would be presumed dead (see :mod:`jobledger.presence`).

- :class:`AsyncRedisLiveness` talks to Redis through ``redis.asyncio``.
- :class:`AsyncSqlLiveness` keeps :class:`~jobledger.liveness.sql.SqlLiveness`'s
  lease rows and rules (where the leases live, a blocked SQLite lease store
  distrusted for one TTL) and runs its short statements off the loop with
  ``asyncio.to_thread``: the rules stay in one place.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import ConfigurationError, LivenessUnavailable
from ..liveness.base import CHUNK, DEFAULT_TTL, Incarnation, Liveness, ProcessInfo

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..liveness.redis import RedisLiveness
    from ..liveness.sql import SqlLiveness
    from .ledger import AsyncLedger


@runtime_checkable
class AsyncLiveness(Protocol):
    """:class:`jobledger.liveness.Liveness`, with coroutines, and its sync twin."""

    ttl: float

    async def register(self, info: ProcessInfo) -> None: ...

    async def refresh(self, info: ProcessInfo) -> bool: ...

    async def unregister(self, identity: str) -> None: ...

    async def remaining(self, identities: Collection[str]) -> dict[str, float | None]: ...

    async def alive(self, identities: Collection[str]) -> dict[str, bool]: ...

    async def processes(self) -> list[ProcessInfo]: ...

    async def known(self) -> set[str]: ...

    async def forget(self, identities: Collection[str]) -> None: ...

    async def incarnation(self) -> Incarnation: ...

    async def close(self) -> None: ...

    def refresher(self) -> Liveness:
        """The sync twin that refreshes from a thread, off the event loop."""
        ...


class AsyncRedisLiveness:
    """Process liveness in Redis, through ``redis.asyncio`` (keys as :class:`RedisLiveness`)."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        ttl: float = DEFAULT_TTL,
        prefix: str = "jobledger",
        *,
        socket_timeout: float = 2.0,
    ) -> None:
        import redis.asyncio  # noqa: PLC0415 (loads redis-py only when asked for)

        from ..liveness.clients import is_cluster_or_sentinel  # noqa: PLC0415
        from ..liveness.redis import (  # noqa: PLC0415
            _INCARNATION,
            _PTTL_ALL,
            RedisLiveness,
            _driver_info,
        )

        if is_cluster_or_sentinel(url):
            raise ConfigurationError(
                "AsyncRedisLiveness talks to one Redis server (redis:// or rediss://); "
                "for a Redis Cluster or Sentinel use RedisLiveness"
            )

        # The twin checks every argument, names the keys and refreshes from the thread.
        self._twin: RedisLiveness = RedisLiveness(
            url, ttl=ttl, prefix=prefix, socket_timeout=socket_timeout
        )
        self.ttl = self._twin.ttl
        self.where = self._twin.where
        self._ttl_ms = max(1, round(self.ttl * 1000))
        self.client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            **_driver_info(),
        )
        self._pttl_all = self.client.register_script(_PTTL_ALL)
        self._incarnation = self.client.register_script(_INCARNATION)
        self._errors = redis.RedisError

    def __repr__(self) -> str:
        return f"AsyncRedisLiveness({self.where}, ttl={self.ttl})"

    def refresher(self) -> Liveness:
        return self._twin

    def key(self, identity: str) -> str:
        return self._twin.key(identity)

    def _unavailable(self, exc: Exception) -> LivenessUnavailable:
        return LivenessUnavailable(f"Redis at {self.where} is unavailable: {exc}")

    async def register(self, info: ProcessInfo) -> None:
        from ..liveness.redis import _encode  # noqa: PLC0415

        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.key(info.identity), _encode(info), px=self._ttl_ms)
            pipe.sadd(self._twin._registry, info.identity)
            await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def refresh(self, info: ProcessInfo) -> bool:
        from ..liveness.redis import _encode  # noqa: PLC0415

        try:
            # XX: only if the key still exists; a lapsed process must not quietly revive.
            key = self.key(info.identity)
            return bool(await self.client.set(key, _encode(info), px=self._ttl_ms, xx=True))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def unregister(self, identity: str) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.key(identity))
            pipe.srem(self._twin._registry, identity)
            await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        from ..liveness.redis import remaining_from  # noqa: PLC0415

        ordered = list(identities)
        replies: list[int] = []
        try:
            for start in range(0, len(ordered), CHUNK):
                keys = [self.key(identity) for identity in ordered[start : start + CHUNK]]
                replies.extend(await self._pttl_all(keys=keys))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return remaining_from(ordered, replies, self.ttl)

    async def alive(self, identities: Collection[str]) -> dict[str, bool]:
        left = await self.remaining(identities)
        return {identity: seconds is not None for identity, seconds in left.items()}

    async def processes(self) -> list[ProcessInfo]:
        from ..liveness.redis import _decode  # noqa: PLC0415

        identities = sorted(await self.known())
        try:
            values = await self.client.mget([self.key(i) for i in identities]) if identities else []
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return [_decode(i, v) for i, v in zip(identities, values, strict=True) if v]

    async def known(self) -> set[str]:
        from ..liveness.redis import _text  # noqa: PLC0415

        try:
            return {_text(m) for m in await self.client.smembers(self._twin._registry)}
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def forget(self, identities: Collection[str]) -> None:
        if identities:
            try:
                await self.client.srem(self._twin._registry, *identities)
            except self._errors as exc:
                raise self._unavailable(exc) from exc

    async def incarnation(self) -> Incarnation:
        from ..liveness.redis import incarnation_from  # noqa: PLC0415

        try:
            token = secrets.token_hex(8)
            reply = await self._incarnation(keys=[self._twin._epoch], args=[token])
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return incarnation_from(reply)

    async def close(self) -> None:
        await self.client.aclose()
        self._twin.close()

    async def __aenter__(self) -> AsyncRedisLiveness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSqlLiveness:
    """Process liveness in the ``jobledger_processes`` lease table (see :class:`SqlLiveness`).

    Given an AsyncLedger (or an Engine or URL), the leases live where
    :func:`jobledger.liveness.sql.lease_url` says; ``leases`` puts them elsewhere.
    """

    def __init__(
        self,
        ledger_or_engine: AsyncLedger | Engine | str,
        ttl: float = DEFAULT_TTL,
        *,
        leases: Engine | str | None = None,
    ) -> None:
        from ..liveness.sql import SqlLiveness  # noqa: PLC0415 (loads the lease store when asked)

        where: Any = getattr(ledger_or_engine, "engine", ledger_or_engine)
        self._twin: SqlLiveness = SqlLiveness(where, ttl=ttl, leases=leases)
        self.ttl = self._twin.ttl

    def __repr__(self) -> str:
        return f"Async{self._twin!r}"

    def refresher(self) -> Liveness:
        return self._twin

    async def register(self, info: ProcessInfo) -> None:
        await asyncio.to_thread(self._twin.register, info)

    async def refresh(self, info: ProcessInfo) -> bool:
        return await asyncio.to_thread(self._twin.refresh, info)

    async def unregister(self, identity: str) -> None:
        await asyncio.to_thread(self._twin.unregister, identity)

    async def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        return await asyncio.to_thread(self._twin.remaining, identities)

    async def alive(self, identities: Collection[str]) -> dict[str, bool]:
        return await asyncio.to_thread(self._twin.alive, identities)

    async def processes(self) -> list[ProcessInfo]:
        return await asyncio.to_thread(self._twin.processes)

    async def known(self) -> set[str]:
        return await asyncio.to_thread(self._twin.known)

    async def forget(self, identities: Collection[str]) -> None:
        await asyncio.to_thread(self._twin.forget, identities)

    async def incarnation(self) -> Incarnation:
        return self._twin.incarnation()  # a constant: a lease table never forgets

    async def close(self) -> None:
        self._twin.close()

    async def __aenter__(self) -> AsyncSqlLiveness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
