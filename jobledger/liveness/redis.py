"""Liveness in Redis: one key with a TTL per live process.

Every key shares one hash tag (``{prefix}``), so on a Redis Cluster all of them
live in one slot, on one master: every pipeline and script below touches that
slot only, and the incarnation (run id, epoch, clock) is read from that master
in the same script, so a restart or failover of the master that holds the
records is what brings doubt (``trust.py``). One slot means one master carries
every record; what that supports: benchmarks/README.md ("Liveness on a Redis
Cluster"). ``EXISTS``/``PTTL`` on a key make Redis expire it if its time is up,
so a poll sees a lapse at once, unlike keyspace notifications, which wait for
Redis's lazy expiry cycle.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import threading
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any, NamedTuple

import redis
from redis.commands.core import Script
from redis.exceptions import RedisClusterException

from .. import bounds
from ..database import mask
from ..errors import ConfigurationError, LivenessUnavailable
from .base import DEFAULT_TTL, Incarnation, LivenessBackend, ProcessInfo, chunked
from .clients import Client, connector

# PTTL of every key, server-side, one command per CHUNK keys (why: benchmarks/README.md).
# All keys share one hash tag, so the script is valid on Redis Cluster too.
_PTTL_ALL = """
local left = {}
for i, key in ipairs(KEYS) do left[i] = redis.call('PTTL', key) end
return left
"""

# The incarnation of the server that holds the epoch key (on a cluster: its slot's master),
# with the epoch created if missing: "<random>@<Redis time in ms>", the time saying how young
# this life is. The SET is a write even when the key exists, so a replica refuses the script
# (READONLY): a client still connected to a master that Sentinel demoted reconnects to the new
# master instead of reading the old one's run id. (Writing after TIME needs Redis 5 or later.)
_INCARNATION = """
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('SET', KEYS[1], ARGV[1] .. '@' .. now_ms, 'NX')
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
return {run_id or '', redis.call('GET', KEYS[1]), now_ms}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@functools.cache
def _driver_info() -> dict[str, Any]:
    """redis-py's client description, looked up once per process (and inherited by forks).

    redis-py 7+ otherwise reads its package metadata from disk for every new
    connection (what that cost: benchmarks/README.md).
    """
    try:
        from redis.driver_info import DriverInfo  # noqa: PLC0415 (redis-py 7+ only)
    except ImportError:
        return {}
    return {"driver_info": DriverInfo()}


class _Scripts(NamedTuple):
    pttl_all: Script
    incarnation: Script


class RedisLiveness(LivenessBackend):
    """Process liveness kept in Redis (redis-py with hiredis).

    ``url_or_client``: a ``redis://`` URL, ``redis+cluster://`` for a Redis Cluster,
    ``redis+sentinel://`` for a master found through Sentinel (``clients.py``), or a
    client of your own: ``redis.Redis`` or ``redis.cluster.RedisCluster``.
    """

    def __init__(
        self,
        url_or_client: str | Client = "redis://localhost:6379/0",
        ttl: float = DEFAULT_TTL,
        prefix: str = "jobledger",
        *,
        socket_timeout: float = 2.0,
    ) -> None:
        bounds.seconds(ttl, "ttl")
        if not prefix or any(c in prefix for c in "{}"):
            raise ConfigurationError(f"prefix must be non-empty and without braces: {prefix!r}")
        self.ttl = float(ttl)
        self._ttl_ms = max(1, round(ttl * 1000))
        self._owns_client = isinstance(url_or_client, str)  # a caller's client is theirs to close
        if isinstance(url_or_client, str):
            self.where = mask(url_or_client)
            self._connect = connector(url_or_client, self.where, socket_timeout, _driver_info())
        else:
            self.where = repr(url_or_client)
            given = url_or_client
            self._connect = lambda: given
        self._client: Client | None = None
        self._making = threading.Lock()  # the refresh thread and the caller's may both be first
        tag = "{" + prefix + "}"
        self._key_prefix = f"{tag}:process:"
        self._registry = f"{tag}:processes"
        self._epoch = f"{tag}:epoch"

    def __repr__(self) -> str:
        return f"RedisLiveness({self.where}, ttl={self.ttl})"

    @property
    def client(self) -> Client:
        """The redis-py client, made on first use (``LivenessUnavailable`` if it cannot be)."""
        if self._client is None:
            with self._making:
                if self._client is None:
                    with self._translated():
                        client = self._connect()
                    self._scripts = _Scripts(
                        client.register_script(_PTTL_ALL), client.register_script(_INCARNATION)
                    )
                    self._client = client
        return self._client

    @property
    def scripts(self) -> _Scripts:
        """The Lua scripts, registered with the client (made first if need be)."""
        self.client  # noqa: B018 (makes the client and its scripts)
        return self._scripts

    def key(self, identity: str) -> str:
        """The Redis key that says ``identity`` is alive."""
        return self._key_prefix + identity

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, RedisClusterException) as exc:
            raise LivenessUnavailable(f"Redis at {self.where} is unavailable: {exc}") from exc

    def register(self, info: ProcessInfo) -> None:
        with self._translated():
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.key(info.identity), _encode(info), px=self._ttl_ms)
            pipe.sadd(self._registry, info.identity)
            pipe.execute()

    def refresh(self, info: ProcessInfo) -> bool:
        with self._translated():
            # XX: only if the key still exists; a lapsed process must not quietly revive.
            return bool(
                self.client.set(self.key(info.identity), _encode(info), px=self._ttl_ms, xx=True)
            )

    def unregister(self, identity: str) -> None:
        with self._translated():
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.key(identity))
            pipe.srem(self._registry, identity)
            pipe.execute()

    def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        ordered = list(identities)
        replies: list[int] = []
        with self._translated():
            for chunk in chunked(ordered):
                replies.extend(
                    self.scripts.pttl_all(keys=[self.key(identity) for identity in chunk])
                )
        return remaining_from(ordered, replies, self.ttl)

    def _each(self, identities: list[str], command: str) -> list[Any]:
        """Run ``command`` on each identity's key, pipelined: one round trip per CHUNK keys."""
        replies: list[Any] = []
        with self._translated():
            for chunk in chunked(identities):
                pipe = self.client.pipeline(transaction=False)
                for identity in chunk:
                    getattr(pipe, command)(self.key(identity))
                replies.extend(pipe.execute())
        return replies

    def processes(self) -> list[ProcessInfo]:
        identities = sorted(self.known())
        values = self._each(identities, "get")
        return [_decode(identity, v) for identity, v in zip(identities, values, strict=True) if v]

    def first_processes(self, limit: int) -> tuple[list[ProcessInfo], int]:
        """The first ``limit`` live processes by identity, and how many are alive in all.

        The registry is read whole (identities only); records are read ``limit`` at a time
        until enough are found alive, and the rest are only counted, by ``EXISTS``.
        """
        identities = sorted(self.known())
        with self._translated():
            pipe = self.client.pipeline(transaction=False)
            for chunk in chunked(identities):
                pipe.exists(*(self.key(identity) for identity in chunk))
            live = sum(pipe.execute())
        first: list[ProcessInfo] = []
        step = max(limit, 1)
        for start in range(0, len(identities), step):
            if len(first) >= limit:
                break
            batch = identities[start : start + step]
            values = self._each(batch, "get")
            first += [_decode(i, v) for i, v in zip(batch, values, strict=True) if v]
        return first[:limit], live

    def known(self) -> set[str]:
        with self._translated():
            return {_text(member) for member in self.client.smembers(self._registry)}

    def forget(self, identities: Collection[str]) -> None:
        if identities:
            with self._translated():
                self.client.srem(self._registry, *identities)

    def incarnation(self) -> Incarnation:
        with self._translated():
            reply = self.scripts.incarnation(keys=[self._epoch], args=[secrets.token_hex(8)])
        return incarnation_from(reply)

    def close(self) -> None:
        """Close the client made here from a URL; a client given by the caller is left open."""
        if self._owns_client and self._client is not None:
            self._client.close()


def incarnation_from(reply: list[Any]) -> Incarnation:
    """The incarnation the ``_INCARNATION`` script replied (from any client, sync or asyncio)."""
    run_id, epoch, now_ms = reply
    epoch_text = _text(epoch)
    born_ms = int(epoch_text.rpartition("@")[2] or now_ms)
    return Incarnation(_text(run_id), epoch_text, max(0, now_ms - born_ms) / 1000)


def remaining_from(ordered: list[str], replies: list[int], ttl: float) -> dict[str, float | None]:
    """Seconds left per identity from the PTTL replies, in ``ordered``'s order (sync or
    asyncio client alike)."""
    # PTTL: -2 = no such key (lapsed), -1 = no expiry (treated as a full TTL).
    return {
        identity: None if ms == -2 else (ttl if ms == -1 else ms / 1000)
        for identity, ms in zip(ordered, replies, strict=True)
    }


def _encode(info: ProcessInfo) -> str:
    return json.dumps(
        {
            "host": info.host,
            "pid": info.pid,
            "started_at": info.started_at.isoformat(),
            "quiet": info.quiet,
            "busy": info.busy,
        },
        separators=(",", ":"),
    )


def _decode(identity: str, raw: Any) -> ProcessInfo:
    value = json.loads(raw)
    return ProcessInfo(
        identity=identity,
        host=value["host"],
        pid=value["pid"],
        started_at=datetime.fromisoformat(value["started_at"]),
        quiet=value["quiet"],
        busy=value["busy"],
    )
