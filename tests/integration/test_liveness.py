"""The liveness contract, once, for Redis keys and SQL leases (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from jobledger import RedisLiveness
from jobledger.errors import ConfigurationError, LivenessUnavailable
from jobledger.identity import new_identity
from jobledger.liveness.base import first_live
from jobledger.testing import free_port
from tests.conftest import Backend
from tests.helpers import info


def test_register_refresh_lapse(backend: Backend) -> None:
    liveness = backend.liveness(ttl=0.6)
    me = info(busy=2)
    liveness.register(me)
    assert liveness.alive([me.identity]) == {me.identity: True}
    left = liveness.remaining([me.identity])[me.identity]
    assert left is not None
    assert 0.3 < left <= 0.6
    (listed,) = liveness.processes()
    assert (listed.identity, listed.busy, listed.quiet) == (me.identity, 2, False)
    assert me.identity in liveness.known()

    time.sleep(0.3)
    assert liveness.refresh(info(me.identity, quiet=True)) is True
    time.sleep(0.4)  # 0.7 s after registering, but refreshed 0.4 s ago
    assert liveness.alive([me.identity])[me.identity]
    assert liveness.processes()[0].quiet is True

    time.sleep(0.8)
    assert liveness.alive([me.identity]) == {me.identity: False}
    assert liveness.remaining([me.identity]) == {me.identity: None}
    assert liveness.refresh(me) is False  # a lapsed process does not quietly revive
    assert liveness.alive([me.identity]) == {me.identity: False}
    assert liveness.processes() == []
    assert me.identity in liveness.known()  # known until forgotten


def test_unregister_and_forget(backend: Backend) -> None:
    liveness = backend.liveness(ttl=0.5)
    gone, lapsed, live = info(), info(), info()
    for p in (gone, lapsed, live):
        liveness.register(p)
    liveness.unregister(gone.identity)
    assert gone.identity not in liveness.known()
    time.sleep(0.6)
    liveness.register(live)
    liveness.forget([lapsed.identity, live.identity])
    if backend.kind == "sql":  # a lease table refuses to forget a live lease
        assert liveness.known() == {live.identity}
    else:
        assert liveness.known() == set()
    assert liveness.alive([live.identity])[live.identity]


def test_many_identities_at_once(backend: Backend) -> None:
    liveness = backend.liveness(ttl=5)
    registered = [info() for _ in range(20)]
    for p in registered:
        liveness.register(p)
    strangers = [new_identity() for _ in range(6000)]
    answer = liveness.alive([p.identity for p in registered] + strangers)
    assert sum(answer.values()) == 20
    assert len(answer) == 6020


def test_the_first_live_processes_and_how_many_are_alive(backend: Backend) -> None:
    # Lapsed records that sort first: the backend must read past them, not list them.
    lapsing = backend.liveness(ttl=0.5)
    for _ in range(3):
        lapsing.register(info(new_identity(host="a-lapsed")))
    time.sleep(0.6)
    liveness = backend.liveness(ttl=30)
    for n in range(12):
        liveness.register(info(new_identity(host="b-live"), busy=n))
    every = liveness.processes()
    assert len(every) == 12
    assert len(liveness.known()) == 15  # the lapsed are still known, not yet forgotten
    assert first_live(liveness, 5) == (every[:5], 12)
    assert first_live(liveness, 12) == (every, 12)
    assert first_live(liveness, 100) == (every, 12)
    assert first_live(liveness, 0) == ([], 12)
    with pytest.raises(ConfigurationError, match="limit"):
        first_live(liveness, -1)


def test_incarnation_is_stable_while_nothing_happens(backend: Backend) -> None:
    liveness = backend.liveness()
    first, second = liveness.incarnation(), liveness.incarnation()
    assert first.same_life(second)


class CountingConnection(redis.Connection):
    """A real connection that counts how often it writes to the socket."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes += 1
        super().send_packed_command(command, check_health)


def test_redis_alive_is_one_round_trip(redis_url: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.ping()
    liveness = RedisLiveness(client, ttl=5, prefix=f"jobledger-test-{new_identity()[-8:]}")
    liveness.alive(["h:1:abcdef01"])  # the first call also loads the script into Redis
    CountingConnection.writes = 0
    liveness.alive([new_identity() for _ in range(4000)])
    assert CountingConnection.writes == 1
    client.close()


def test_redis_keys_share_one_hash_tag(redis_url: str) -> None:
    liveness = RedisLiveness(redis_url, prefix="shop")
    assert liveness.key("h:1:abcdef01") == "{shop}:process:h:1:abcdef01"


def test_unreachable_redis_is_a_clear_error() -> None:
    liveness = RedisLiveness(
        f"redis://:hunter2@127.0.0.1:{free_port()}/0", ttl=1, socket_timeout=0.5
    )
    for call in (lambda: liveness.register(info()), lambda: liveness.alive(["h:1:abcdef01"])):
        with pytest.raises(LivenessUnavailable) as caught:
            call()
        assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"prefix": ""},
        {"prefix": "a{b"},
        {"url_or_client": "nope://x"},
        {"url_or_client": "redis+cluster://127.0.0.1:7000/3"},  # a cluster has database 0 only
        {"url_or_client": "redis+cluster://127.0.0.1:70a0"},
        {"url_or_client": "redis+cluster://127.0.0.1:7000,:7001"},
        {"url_or_client": "redis+cluster://127.0.0.1:7000?socket_timeout=1"},
        {"url_or_client": "redis+sentinel://127.0.0.1:26379"},  # which service?
        {"url_or_client": "redis+sentinel://127.0.0.1:26379/svc/notadb"},
        {"url_or_client": "redis+sentinel://127.0.0.1:26379/svc/0/extra"},
    ],
)
def test_bad_redis_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisLiveness(**{"url_or_client": "redis://127.0.0.1:6379/0", **bad})


def test_cluster_keys_share_one_slot(redis_cluster_url: str) -> None:
    with RedisLiveness(redis_cluster_url, prefix="shop") as liveness:
        keys = [liveness.key("h:1:abcdef01"), "{shop}:processes", "{shop}:epoch"]
        assert isinstance(liveness.client, RedisCluster)
        assert len({liveness.client.keyslot(key) for key in keys}) == 1


def test_a_cluster_client_of_your_own(redis_cluster_url: str) -> None:
    host, _, port = redis_cluster_url.removeprefix("redis+cluster://").split(",")[0].partition(":")
    client = RedisCluster(host=host, port=int(port))
    liveness = RedisLiveness(client, ttl=5, prefix=f"jobledger-test-{new_identity()[-8:]}")
    me = info()
    liveness.register(me)
    assert liveness.alive([me.identity, "h:1:abcdef01"]) == {
        me.identity: True,
        "h:1:abcdef01": False,
    }
    liveness.unregister(me.identity)
    liveness.close()
    assert client.ping()  # the caller's client stays open
    client.close()


def test_unreachable_cluster_is_a_clear_error() -> None:
    # (Sentinel: tests/faults/test_sentinel.py; unreachable, redis-py retries it for seconds.)
    url = f"redis+cluster://:hunter2@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    # Made without a word (a Redis that is down must not stop a process from starting)...
    liveness = RedisLiveness(url, ttl=1, socket_timeout=0.5)
    assert "hunter2" not in repr(liveness)
    # ... and unavailable on use, like a single Redis.
    with pytest.raises(LivenessUnavailable) as caught:
        liveness.register(info())
    assert "hunter2" not in str(caught.value)
    liveness.close()
