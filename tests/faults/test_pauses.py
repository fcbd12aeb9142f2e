"""Live-but-slow workers: CPU starvation and SIGSTOP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.faults.conftest import TTL, FaultEnv


def test_live_worker_under_cpu_load_is_never_abandoned(fault_env: FaultEnv) -> None:
    env = fault_env
    jobs = ["load-a", "load-b", "load-c"]
    env.ledger.enqueue_many(jobs)
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)
    ]  # three busy processes on two cores
    try:
        projector = env.projector(grace=0)
        worker = env.worker(jobs, "--complete-after", str(5 * TTL), "--busy")
        worker.expect("claimed")
        for _ in jobs:
            assert worker.expect("completed", timeout=5 * TTL + 15)["event"] == "completed"
        assert worker.expect("done")["presumed_dead"] is False
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    for job_id in jobs:
        assert env.types(job_id) == ["enqueued", "claimed", "completed"]
    assert projector.counters.abandoned == 0  # the false-abandon count


def test_short_sigstop_changes_nothing(fault_env: FaultEnv) -> None:
    env = fault_env
    ttl = 2.0
    env.ledger.enqueue("nap")
    projector = env.projector(ttl=ttl, grace=0)
    worker = env.worker(["nap"], "--complete-after", "1.5", ttl=ttl)
    worker.expect("claimed")
    time.sleep(0.7)  # a refresh has happened recently
    worker.signal(signal.SIGSTOP)
    time.sleep(0.6)  # well under what is left of the TTL
    worker.signal(signal.SIGCONT)
    assert worker.expect("completed")["job"] == "nap"
    assert worker.expect("done")["presumed_dead"] is False
    assert env.types("nap") == ["enqueued", "claimed", "completed"]
    assert projector.counters.abandoned == 0


def test_long_sigstop_is_abandoned_and_the_zombie_refused(fault_env: FaultEnv) -> None:
    env = fault_env
    env.ledger.enqueue("frozen")
    projector = env.projector(grace=0)
    worker = env.worker(["frozen"], "--complete-after", "0.5")
    identity = worker.expect("claimed")["identity"]
    worker.signal(signal.SIGSTOP)
    env.wait_for(lambda: env.ledger.status("frozen").state == "enqueued", timeout=TTL + 5)
    env.settled(projector)
    assert projector.counters.abandoned == 1
    worker.signal(signal.SIGCONT)

    refused = worker.expect("stale")
    assert refused["job"] == "frozen"
    assert worker.expect("done")["presumed_dead"] is True
    history = env.ledger.history("frozen")
    assert [e.type for e in history] == ["enqueued", "claimed", "abandoned", "requeued", "rejected"]
    assert history[-1].process == identity
    assert history[-1].data["attempted"] == "completed"
    assert "presumed" in "".join(worker.stderr)
