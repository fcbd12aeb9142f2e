"""Cluster and Sentinel URLs taken apart (no server: the Redis parts run in tests/integration)."""

from __future__ import annotations

import pytest

from jobledger.database import mask
from jobledger.errors import ConfigurationError
from jobledger.liveness.clients import _Parts, connector, is_cluster_or_sentinel


def test_cluster_url_parts() -> None:
    url = "rediss+cluster://me:p%40ss@word/x@cache-1:7000,[::1]:7001,cache-3"
    parts = _Parts.of(url, mask(url))
    assert parts.tls
    assert parts.nodes == [("cache-1", 7000), ("::1", 7001), ("cache-3", 6379)]
    assert (parts.username, parts.password) == ("me", "p@ss@word/x")
    assert parts.path == []
    assert "word" not in parts.where


def test_sentinel_url_parts() -> None:
    url = "redis+sentinel://:secret@s1,s2:26380/jobs/2?sentinel_password=other"
    parts = _Parts.of(url, mask(url))
    assert not parts.tls
    assert parts.nodes == [("s1", 26379), ("s2", 26380)]  # Sentinel's port by default
    assert (parts.username, parts.password) == (None, "secret")
    assert parts.path == ["jobs", "2"]
    assert parts.query == {"sentinel_password": ["other"]}
    assert "secret" not in parts.where
    assert "other" not in parts.where


def test_a_sentinel_client_is_made_without_connecting() -> None:
    client = connector("redis+sentinel://127.0.0.1:1/jobs/3", "-", 0.5, {})()
    pool = client.connection_pool
    assert (pool.service_name, pool.connection_kwargs["db"]) == ("jobs", 3)
    client.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://h:1", True),
        ("REDISS+SENTINEL://h:1/s", True),
        ("redis://h:1/0", False),
        ("unix:///tmp/redis.sock", False),
    ],
)
def test_is_cluster_or_sentinel(url: str, expected: bool) -> None:
    assert is_cluster_or_sentinel(url) is expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://h:1/2", "database 0 only"),
        ("redis+cluster://h:1?password=x", "unknown option 'password'"),
        ("redis+sentinel://h:1", "/service_name"),
        ("redis+sentinel://h:1/s?ssl=1", "unknown option 'ssl'"),
        ("redis+cluster://h:port", "Port could not be cast"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match="not a Redis URL") as caught:
        connector(url, mask(url), 1.0, {})
    assert says in str(caught.value)
