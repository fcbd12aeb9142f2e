"""Redis restarts and outages must never look like dead workers."""

from __future__ import annotations

import signal
import time

import pytest

from jobledger import RecoveryProjector, Worker
from jobledger.errors import AlreadyClaimed
from tests.faults.conftest import TTL, FaultEnv


def _two_workers(env: FaultEnv) -> tuple[RecoveryProjector, list[str]]:
    """A projector, and two live workers holding three jobs for longer than a TTL."""
    projector = env.projector(grace=0)
    env.ledger.enqueue_many(["w1-a", "w1-b", "w2-a"])
    identities = []
    for jobs in (["w1-a", "w1-b"], ["w2-a"]):
        worker = env.worker(jobs)
        identities.append(worker.expect("claimed")["identity"])
    time.sleep(TTL)
    return projector, identities


def test_redis_restarted_empty_while_workers_live(redis_env: FaultEnv) -> None:
    env = redis_env
    assert env.redis is not None
    projector, identities = _two_workers(env)
    env.redis.restart()  # comes back with no keys at all
    liveness = env.liveness()
    env.wait_for(lambda: all(liveness.alive(identities).values()), timeout=TTL * 2)
    time.sleep(3 * TTL)
    assert projector.counters.abandoned == 0
    assert projector.counters.paused_sweeps >= 1
    assert {s.state for s in env.ledger.jobs()} == {"claimed"}
    assert all(liveness.alive(identities).values())


def test_redis_down_then_back(redis_env: FaultEnv) -> None:
    env = redis_env
    assert env.redis is not None
    projector, identities = _two_workers(env)
    env.redis.stop()
    time.sleep(3 * TTL)  # far longer than the TTL: every key would have lapsed
    assert projector.counters.unavailable_sweeps >= 1
    assert projector.counters.abandoned == 0
    env.redis.start()  # empty again
    liveness = env.liveness()
    env.wait_for(lambda: all(liveness.alive(identities).values()), timeout=TTL * 4)
    time.sleep(2 * TTL)
    assert projector.counters.abandoned == 0
    assert {s.state for s in env.ledger.jobs()} == {"claimed"}

    # Recovery resumes: a worker killed now is recovered as usual.
    env.workers[1].signal(signal.SIGKILL)
    env.workers[1].kill()
    env.wait_for(lambda: env.ledger.status("w2-a").state == "enqueued", timeout=TTL + 4)
    assert env.ledger.status("w1-a").state == "claimed"


def test_no_takeover_right_after_redis_restarted_empty(redis_env: FaultEnv) -> None:
    """A redelivery right after a restart must not take the job of a holder still re-registering.

    The holder's record is missing until its next refresh; before the fix the second worker
    read that as a death, abandoned the job and took it, and the holder's complete was refused.
    """
    env = redis_env
    assert env.redis is not None
    env.ledger.enqueue("job-1")
    holder = env.worker(["job-1"], "--complete-after", str(4 * TTL))
    holder_id = holder.expect("claimed")["identity"]
    with Worker(env.ledger, env.liveness(), grace=0) as second:
        time.sleep(TTL)  # the private Redis's life is a TTL old: takeovers would be trusted
        with pytest.raises(AlreadyClaimed):
            second.claim("job-1")  # the holder is alive
        env.redis.restart()  # comes back with no keys at all
        time.sleep(0.1)
        with pytest.raises(AlreadyClaimed) as caught:
            second.claim("job-1")  # its record is missing, but that proves nothing yet
        assert caught.value.holder == holder_id
    assert holder.expect("completed", timeout=6 * TTL)["job"] == "job-1"
    assert env.types("job-1") == ["enqueued", "claimed", "completed"]
