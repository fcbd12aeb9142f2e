"""Liveness on a private Redis Cluster (three masters): the same promises as on one Redis.

A worker SIGKILLed is recovered by the real ``jobledger recover`` command within
TTL + 2 s. The master that holds the liveness slot restarting empty, or failing over
to its replica, is a new life of the backend: no lapse is believed for one TTL, no
live process is presumed dead, and recovery resumes after it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobledger.errors import LivenessUnavailable
from jobledger.liveness import Liveness
from jobledger.testing import RedisClusterServers
from tests.conftest import truncate_all
from tests.faults.conftest import ROOT, TTL, FaultEnv
from tests.faults.test_redis_outages import _two_workers

PREFIX = "jobledger"  # the recover command's


@pytest.fixture
def cli_cluster_env(request: pytest.FixtureRequest) -> Iterator[FaultEnv]:
    """PostgreSQL, and liveness on the session's cluster under the recover command's prefix."""
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    env = FaultEnv(
        "redis-cluster-postgresql",
        url,
        None,
        redis_url=request.getfixturevalue("redis_cluster_url"),
    )
    env.prefix = PREFIX
    yield env
    env.close()


@pytest.fixture
def cluster_env(
    request: pytest.FixtureRequest, redis_cluster: RedisClusterServers
) -> Iterator[FaultEnv]:
    """PostgreSQL, and liveness on the session's cluster under a prefix of its own;
    ``env.redis`` is the master of that prefix's slot."""
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    env = FaultEnv("redis-cluster-postgresql", url, None, redis_url=redis_cluster.url)
    env.prefix = f"faults-{secrets.token_hex(4)}"
    env.redis = redis_cluster.holder_of(_epoch(env))
    yield env
    env.close()
    redis_cluster.wait_until_ok()


def _epoch(env: FaultEnv) -> str:
    return "{" + env.prefix + "}:epoch"


@contextlib.contextmanager
def _recover_command(env: FaultEnv, log: Path) -> Iterator[None]:
    """``jobledger recover`` on the cluster, sweeping every 0.2 s, from its start (it said so in
    ``log``) until it stopped cleanly on SIGTERM."""
    assert env.redis_url is not None
    settings = {"JOBLEDGER_DATABASE_URL": env.database_url, "JOBLEDGER_REDIS_URL": env.redis_url}
    command = [sys.executable, "-m", "jobledger.cli", "recover", "--ttl", str(TTL)]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--interval", "0.2"],
            cwd=ROOT,
            env={**os.environ, **settings},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        env.wait_for(lambda: "started" in log.read_text() or process.poll() is not None, 30)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()


def _all_alive(liveness: Liveness, identities: list[str]) -> bool:
    try:
        return all(liveness.alive(identities).values())
    except LivenessUnavailable:  # the restarted master serves its slots ~2 s after it starts
        return False


def test_killed_worker_is_recovered_by_the_recover_command(
    cli_cluster_env: FaultEnv, tmp_path: Path
) -> None:
    env = cli_cluster_env
    jobs = [f"cluster-kill-{i}" for i in range(5)]
    env.ledger.enqueue_many(jobs)
    with _recover_command(env, tmp_path / "recover.log"):
        worker = env.worker(jobs)
        identity = worker.expect("claimed")["identity"]
        time.sleep(TTL)  # the claims age past the grace period while the worker lives
        assert {s.state for s in env.ledger.jobs()} == {"claimed"}

        worker.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        worker.kill()
        env.wait_for(lambda: {s.state for s in env.ledger.jobs()} == {"enqueued"}, TTL + 5)
        assert time.monotonic() - killed_at <= TTL + 2
    for job_id in jobs:
        history = env.ledger.history(job_id)
        assert [e.type for e in history] == ["enqueued", "claimed", "abandoned", "requeued"]
        assert history[2].data["holder"] == identity


def test_restart_and_failover_of_the_liveness_slot_master(
    cluster_env: FaultEnv, redis_cluster: RedisClusterServers
) -> None:
    env = cluster_env
    assert env.redis is not None
    projector, identities = _two_workers(env)
    watcher = env.liveness()
    lives = [watcher.incarnation()]

    def no_live_process_presumed_dead() -> None:
        env.wait_for(lambda: _all_alive(watcher, identities), timeout=TTL + 6)
        lives.append(watcher.incarnation())
        time.sleep(2 * TTL)
        assert projector.counters.abandoned == 0
        assert {s.state for s in env.ledger.jobs()} == {"claimed"}

    env.redis.restart()  # the master holding every liveness key comes back with no keys
    no_live_process_presumed_dead()
    assert lives[1].run_id != lives[0].run_id
    assert lives[1].epoch != lives[0].epoch  # its keys, the epoch among them, are gone
    paused = projector.counters.paused_sweeps
    assert paused >= 1  # one TTL of doubt, as on one Redis

    redis_cluster.fail_over(_epoch(env))  # its replica takes the slot over, keys and all
    no_live_process_presumed_dead()
    assert lives[2].run_id != lives[1].run_id
    assert lives[2].epoch == lives[1].epoch  # replicated: a failover, not a flush
    assert projector.counters.paused_sweeps > paused

    # After that TTL lapses are believed again: a worker killed now is recovered as usual.
    env.workers[1].signal(signal.SIGKILL)
    env.workers[1].kill()
    env.wait_for(lambda: env.ledger.status("w2-a").state == "enqueued", timeout=TTL + 4)
    assert env.ledger.status("w1-a").state == "claimed"
    watcher.close()
