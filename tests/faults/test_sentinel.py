"""Liveness through Redis Sentinel: a failover moves every process to the new master, and no
live process is presumed dead on the way."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from jobledger import RedisLiveness
from jobledger.errors import LivenessUnavailable
from jobledger.testing import RedisSentinelServers
from tests.conftest import cluster_tools_missing, truncate_all
from tests.faults.conftest import TTL, FaultEnv
from tests.faults.test_redis_outages import _two_workers


@pytest.fixture
def sentinel() -> Iterator[RedisSentinelServers]:
    cluster_tools_missing()
    with RedisSentinelServers() as servers:
        yield servers


@pytest.fixture
def sentinel_env(
    request: pytest.FixtureRequest, sentinel: RedisSentinelServers
) -> Iterator[FaultEnv]:
    """PostgreSQL, and liveness on the master the sentinel names."""
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    env = FaultEnv("redis-sentinel-postgresql", url, None, redis_url=sentinel.url)
    yield env
    env.close()


def test_failover_presumes_no_live_process_dead(
    sentinel_env: FaultEnv, sentinel: RedisSentinelServers
) -> None:
    env = sentinel_env
    projector, identities = _two_workers(env)
    watcher = env.liveness()
    before = watcher.incarnation()
    old_master = sentinel.master_port()

    sentinel.failover()  # the replica is promoted; the old master becomes its replica

    assert sentinel.master_port() != old_master
    liveness = env.liveness()  # a newcomer, asking the sentinel afresh
    env.wait_for(lambda: all(liveness.alive(identities).values()), timeout=TTL * 4)
    after = watcher.incarnation()  # the old client followed the failover
    assert after.run_id != before.run_id
    assert after.epoch == before.epoch  # the epoch was replicated: not a flush
    time.sleep(2 * TTL)
    assert projector.counters.abandoned == 0
    assert projector.counters.paused_sweeps >= 1  # the new master's run id: one TTL of doubt
    assert {s.state for s in env.ledger.jobs()} == {"claimed"}
    for worker in env.workers:
        assert "presumed dead" not in "".join(worker.stderr)

    # The projector reads the new master: a worker killed now is recovered as usual.
    env.workers[1].signal(signal.SIGKILL)
    env.workers[1].kill()
    env.wait_for(lambda: env.ledger.status("w2-a").state == "enqueued", timeout=TTL + 4)
    assert env.ledger.status("w1-a").state == "claimed"
    watcher.close()
    liveness.close()


def test_unknown_service_is_unavailable_liveness(sentinel: RedisSentinelServers) -> None:
    url = f"redis+sentinel://:hunter2@127.0.0.1:{sentinel.port}/no-such-service"
    liveness = RedisLiveness(url, ttl=1, socket_timeout=0.5)
    assert "hunter2" not in repr(liveness)
    with pytest.raises(LivenessUnavailable, match="no-such-service") as caught:
        liveness.incarnation()
    assert "hunter2" not in str(caught.value)
    liveness.close()
