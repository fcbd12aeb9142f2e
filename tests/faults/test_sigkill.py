"""SIGKILL a worker holding jobs: every job is abandoned within TTL + 2 s and requeued."""

from __future__ import annotations

import signal
import time
from collections import Counter

from jobledger import RecoveryPolicy
from tests.faults.conftest import TTL, FaultEnv

JOBS = [f"kill-{i}" for i in range(5)]


def test_killed_worker_jobs_are_abandoned_and_requeued(fault_env: FaultEnv) -> None:
    env = fault_env
    env.ledger.enqueue_many(JOBS)
    projector = env.projector(policy=RecoveryPolicy(max_attempts=3))
    worker = env.worker(JOBS)
    identity = worker.expect("claimed")["identity"]
    time.sleep(TTL)  # the claims age past the grace period while the worker lives
    assert {s.state for s in env.ledger.jobs()} == {"claimed"}

    worker.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    worker.kill()

    def all_requeued() -> bool:
        return {s.state for s in env.ledger.jobs()} == {"enqueued"}

    env.wait_for(all_requeued, timeout=TTL + 5)
    assert time.monotonic() - killed_at <= TTL + 2
    for job_id in JOBS:
        history = env.ledger.history(job_id)
        assert [e.type for e in history] == ["enqueued", "claimed", "abandoned", "requeued"]
        assert history[1].process == identity
        assert history[2].data["holder"] == identity
        assert identity in history[2].data["reason"]
        assert history[2].process == projector.identity
    env.settled(projector)
    assert projector.counters.abandoned == len(JOBS)
    latencies = list(projector.counters.latencies)
    assert len(latencies) == len(JOBS)
    assert max(latencies) < 2


def test_two_projectors_abandon_each_claim_exactly_once(fault_env: FaultEnv) -> None:
    env = fault_env
    jobs = [f"double-{i}" for i in range(20)]
    env.ledger.enqueue_many(jobs)
    first, second = env.projector(grace=0), env.projector(grace=0)
    worker = env.worker(jobs)
    worker.expect("claimed")
    worker.signal(signal.SIGKILL)
    worker.kill()
    env.wait_for(lambda: {s.state for s in env.ledger.jobs()} == {"enqueued"}, timeout=TTL + 5)
    env.settled(first)
    env.settled(second)
    for job_id in jobs:
        counts = Counter(env.types(job_id))
        assert counts["abandoned"] == 1, env.types(job_id)
        assert counts["requeued"] == 1
    assert first.counters.abandoned + second.counters.abandoned == len(jobs)
