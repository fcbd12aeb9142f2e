"""A job system redelivers a job to a second worker: take over from the dead, never the living."""

from __future__ import annotations

import signal

import pytest

from jobledger import Worker
from jobledger.errors import AlreadyClaimed
from jobledger.records import Claim
from tests.conftest import RECOVERED_STORY
from tests.faults.conftest import TTL, FaultEnv


def test_takeover_after_sigkill(fault_env: FaultEnv) -> None:
    env = fault_env
    env.ledger.enqueue("redelivered")
    first = env.worker(["redelivered"])
    dead = first.expect("claimed")["identity"]
    first.signal(signal.SIGKILL)
    first.kill()
    liveness = env.liveness()
    env.wait_for(lambda: not liveness.alive([dead])[dead], timeout=TTL + 2)
    with Worker(env.ledger, liveness) as second:
        # No projector involved: taken over as soon as the claim is older than the grace.
        taken: list[Claim] = []
        env.wait_for(lambda: _claimed(second, "redelivered", taken), timeout=TTL + 1)
        (claim,) = taken
        assert claim.attempt == 2
        second.complete(claim)
    history = env.ledger.history("redelivered")
    assert [e.type for e in history] == RECOVERED_STORY
    assert history[2].data["holder"] == dead


def test_no_takeover_from_a_live_worker(fault_env: FaultEnv) -> None:
    env = fault_env
    env.ledger.enqueue("busy")
    first = env.worker(["busy"])
    holder = first.expect("claimed")["identity"]
    with Worker(env.ledger, env.liveness()) as second, pytest.raises(AlreadyClaimed) as caught:
        second.claim("busy")
    assert caught.value.holder == holder
    assert env.types("busy") == ["enqueued", "claimed"]


def _claimed(worker: Worker, job_id: str, taken: list[Claim]) -> bool:
    try:
        taken.append(worker.claim(job_id))
    except AlreadyClaimed:
        return False
    return True
