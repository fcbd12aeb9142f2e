"""Which Redis a URL names: one server, a Redis Cluster, or a master found through Sentinel.

``redis://`` and ``rediss://`` (and ``unix://``) go to redis-py as they are.
``redis+cluster://[user:password@]host:port[,host:port...]`` connects to a Redis
Cluster through any of its nodes; ``redis+sentinel://[user:password@]host:port
[,host:port...]/service[/db]`` asks the sentinels for the master of ``service``
and asks them again after every failover (redis-py's ``Sentinel``). The
``rediss+`` forms use TLS. The password in a Sentinel URL is the master's;
sentinels that want one of their own get it as ``?sentinel_password=``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from ..errors import ConfigurationError

#: A client RedisLiveness can use: one server's (also Sentinel's master_for) or a cluster's.
Client: TypeAlias = "redis.Redis | RedisCluster"

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def is_cluster_or_sentinel(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster or a Sentinel service (not one server)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES + SENTINEL_SCHEMES


def connector(
    url: str, where: str, socket_timeout: float, extra: dict[str, Any]
) -> Callable[[], Client]:
    """What makes a client for ``url``; ``where`` is the URL with its secrets masked.

    The URL is checked now (``ConfigurationError`` if it names no Redis); the client
    is made when the returned function is called, because a cluster client asks a
    node for the slot map at once and a Redis that is down must not stop a process
    from starting (it is retried like any outage).
    """
    scheme = url.partition("://")[0].lower()
    options = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
    options |= extra
    if scheme in CLUSTER_SCHEMES:
        return _cluster(_Parts.of(url, where), options)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(_Parts.of(url, where), options)
    _check_plain_url(url, where)
    try:
        client = redis.Redis.from_url(url, **options)  # connects on first command only
    except ValueError as exc:
        raise ConfigurationError(f"not a Redis URL: {where} ({exc})") from None
    return lambda: client


@dataclass(frozen=True)
class _Parts:
    """A cluster or Sentinel URL taken apart: its nodes, credentials, path and query."""

    where: str
    tls: bool
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    path: list[str]
    query: dict[str, list[str]]

    @classmethod
    def of(cls, url: str, where: str) -> _Parts:
        scheme, _, rest = url.partition("://")
        # The user information runs to the last "@" before the query (as in database.mask):
        # a password may hold an "@" or a "/" of its own.
        rest, _, query = rest.partition("?")
        userinfo, at, rest = rest.rpartition("@")
        username, _, password = userinfo.partition(":") if at else ("", "", "")
        hosts, _, path = rest.partition("/")
        default_port = 26379 if scheme.lower() in SENTINEL_SCHEMES else 6379
        nodes = [_node(host, where, default_port) for host in hosts.split(",")]
        return cls(
            where=where,
            tls=scheme.lower().startswith("rediss"),
            nodes=nodes,
            username=unquote(username) or None,
            password=unquote(password) or None,
            path=[unquote(p) for p in path.split("/") if p],
            query=parse_qs(query, keep_blank_values=True),
        )

    def bad(self, why: str) -> ConfigurationError:
        return ConfigurationError(f"not a Redis URL: {self.where} ({why})")

    def only_options(self, *allowed: str) -> None:
        unknown = sorted(set(self.query) - set(allowed))
        if unknown:
            raise self.bad(
                f"unknown option {unknown[0]!r}; allowed: {', '.join(allowed) or 'none'}"
            )


def _node(host: str, where: str, default_port: int) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; the port defaults to Redis's or Sentinel's."""
    try:
        parts = urlsplit("//" + host)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"not a Redis URL: {where} ({exc})") from None
    if not parts.hostname:
        raise ConfigurationError(f"not a Redis URL: {where} (a host is missing)")
    return parts.hostname, port or default_port


def _cluster(parts: _Parts, options: dict[str, Any]) -> Callable[[], Client]:
    if parts.path not in ([], ["0"]):
        raise parts.bad("a Redis Cluster has database 0 only; give no path")
    parts.only_options()
    # redis-py leaves ClusterNode, Sentinel and master_for untyped.
    nodes = [ClusterNode(host, port) for host, port in parts.nodes]  # type: ignore[no-untyped-call]
    return lambda: RedisCluster(
        startup_nodes=nodes,
        username=parts.username,
        password=parts.password,
        ssl=parts.tls,
        **options,
    )


def _sentinel_master(parts: _Parts, options: dict[str, Any]) -> Callable[[], Client]:
    from redis.sentinel import Sentinel  # noqa: PLC0415 (only for Sentinel URLs)

    if len(parts.path) not in (1, 2) or (len(parts.path) == 2 and not parts.path[1].isdecimal()):
        raise parts.bad("the path must be /service_name or /service_name/db")
    parts.only_options("sentinel_password")
    sentinel_password = parts.query.get("sentinel_password", [None])[-1]
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        parts.nodes,
        sentinel_kwargs={**timeouts, "ssl": parts.tls, "password": sentinel_password or None},
        **options,
    )
    # The master's client asks the sentinels where the master is on each new connection.
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parts.path[0],
        db=int(parts.path[1]) if len(parts.path) == 2 else 0,
        username=parts.username,
        password=parts.password,
        ssl=parts.tls,
    )
    return lambda: master


def _check_plain_url(url: str, where: str) -> None:
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
