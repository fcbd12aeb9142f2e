"""An asyncio worker in a real process: a blocked event loop does not look dead, a killed
process does."""

from __future__ import annotations

import signal
import time

from jobledger import RecoveryPolicy
from tests.faults.conftest import TTL, FaultEnv


def test_a_worker_whose_loop_is_blocked_for_five_ttls_stays_alive(fault_env: FaultEnv) -> None:
    env = fault_env
    env.ledger.enqueue("blocked")
    projector = env.projector(grace=0)  # would abandon the claim the moment its holder lapsed
    liveness = env.liveness()
    worker = env.async_worker("blocked", "--block", str(5 * TTL))
    identity = worker.expect("claimed")["identity"]
    deadline = time.monotonic() + 4 * TTL
    while time.monotonic() < deadline:  # all the while the loop stands still
        assert liveness.alive([identity])[identity]
        time.sleep(0.1)
    assert worker.expect("unblocked")["presumed_dead"] is False
    worker.expect("completed")
    assert env.types("blocked") == ["enqueued", "claimed", "completed"]
    assert projector.counters.abandoned == 0
    liveness.close()


def test_a_killed_async_worker_stops_refreshing_and_its_job_is_recovered(
    fault_env: FaultEnv,
) -> None:
    env = fault_env
    env.ledger.enqueue("killed")
    projector = env.projector(policy=RecoveryPolicy(max_attempts=3))
    worker = env.async_worker("killed", "--block", "600")
    identity = worker.expect("claimed")["identity"]
    time.sleep(TTL)  # the claim ages past the grace period while the worker lives
    assert env.types("killed") == ["enqueued", "claimed"]

    worker.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    worker.kill()
    env.wait_for(lambda: env.ledger.status("killed").state == "enqueued", timeout=TTL + 5)
    assert time.monotonic() - killed_at <= TTL + 2
    history = env.ledger.history("killed")
    assert [e.type for e in history] == ["enqueued", "claimed", "abandoned", "requeued"]
    assert history[2].data["holder"] == identity
    assert history[2].process == projector.identity
