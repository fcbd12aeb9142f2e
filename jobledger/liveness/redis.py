"""Liveness in Redis: one key with a TTL per live process.

Keys share one hash tag (``{prefix}``), so they live in one slot and the
pipelines below work unchanged on Redis Cluster. ``EXISTS``/``PTTL`` on a key
make Redis expire it if its time is up, so a poll sees a lapse at once, unlike
keyspace notifications, which wait for Redis's lazy expiry cycle.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

from .. import bounds
from ..database import mask
from ..errors import ConfigurationError, LivenessUnavailable
from .base import DEFAULT_TTL, Incarnation, LivenessBackend, ProcessInfo, chunked

# PTTL of every key, server-side, one command per CHUNK keys (why: benchmarks/README.md).
# All keys share one hash tag, so the script is valid on Redis Cluster too.
_PTTL_ALL = """
local left = {}
for i, key in ipairs(KEYS) do left[i] = redis.call('PTTL', key) end
return left
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


def _check_url(url: str, where: str) -> None:
    """``ConfigurationError`` for what redis-py would take without a word or fail on later.

    redis-py reads ``redis://host/notadb`` as database 0: a projector given that
    typo would watch an empty database and see every worker as dead.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing it raises ValueError for a port that is no number)
    except ValueError as exc:
        raise ConfigurationError(f"not a Redis URL: {where} ({exc})") from None
    database = unquote(parts.path).strip("/")
    if parts.scheme in ("redis", "rediss") and database and not database.isdecimal():
        raise ConfigurationError(
            f"not a Redis URL: {where} (the path must be a database number, "
            f"e.g. redis://localhost:6379/0, not {database!r})"
        )


class RedisLiveness(LivenessBackend):
    """Process liveness kept in Redis (redis-py with hiredis)."""

    def __init__(
        self,
        url_or_client: str | redis.Redis = "redis://localhost:6379/0",
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
            _check_url(url_or_client, self.where)
            try:
                self.client = redis.Redis.from_url(
                    url_or_client,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout,
                    **_driver_info(),
                )
            except ValueError as exc:
                raise ConfigurationError(f"not a Redis URL: {self.where} ({exc})") from None
        else:
            self.client = url_or_client
            self.where = repr(url_or_client)
        self._pttl_all = self.client.register_script(_PTTL_ALL)
        tag = "{" + prefix + "}"
        self._key_prefix = f"{tag}:process:"
        self._registry = f"{tag}:processes"
        self._epoch = f"{tag}:epoch"

    def __repr__(self) -> str:
        return f"RedisLiveness({self.where}, ttl={self.ttl})"

    def key(self, identity: str) -> str:
        """The Redis key that says ``identity`` is alive."""
        return self._key_prefix + identity

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
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
                replies.extend(self._pttl_all(keys=[self.key(identity) for identity in chunk]))
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

    def known(self) -> set[str]:
        with self._translated():
            return {_text(member) for member in self.client.smembers(self._registry)}

    def forget(self, identities: Collection[str]) -> None:
        if identities:
            with self._translated():
                self.client.srem(self._registry, *identities)

    def incarnation(self) -> Incarnation:
        with self._translated():
            pipe = self.client.pipeline(transaction=False)
            pipe.info("server")
            pipe.get(self._epoch)
            pipe.time()
            server, epoch, (seconds, micros) = pipe.execute()
            now_ms = seconds * 1000 + micros // 1000
            if epoch is None:
                fresh = new_epoch(now_ms)
                created = self.client.set(self._epoch, fresh, nx=True)
                epoch = fresh if created else self.client.get(self._epoch)
        return incarnation_of(server, epoch, now_ms)

    def close(self) -> None:
        """Close the client made here from a URL; a client given by the caller is left open."""
        if self._owns_client:
            self.client.close()


def remaining_from(ordered: list[str], replies: list[int], ttl: float) -> dict[str, float | None]:
    """Seconds left per identity from the PTTL replies, in ``ordered``'s order."""
    # PTTL: -2 = no such key (lapsed), -1 = no expiry (treated as a full TTL).
    return {
        identity: None if ms == -2 else (ttl if ms == -1 else ms / 1000)
        for identity, ms in zip(ordered, replies, strict=True)
    }


def new_epoch(now_ms: int) -> str:
    """A new epoch value, "<random>@<Redis time in ms>": its creation time says how young
    this life of the server is."""
    return f"{secrets.token_hex(8)}@{now_ms}"


def incarnation_of(server: dict[str, Any], epoch: Any, now_ms: int) -> Incarnation:
    """The incarnation from ``INFO server``, the epoch key's value and the Redis time."""
    epoch_text = _text(epoch)
    born_ms = int(epoch_text.rpartition("@")[2] or now_ms)
    return Incarnation(str(server.get("run_id")), epoch_text, max(0, now_ms - born_ms) / 1000)


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
