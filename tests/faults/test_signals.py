"""Sidekiq-style signals on a real worker process, and a clean SIGTERM of `jobledger recover`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.faults.conftest import FaultEnv
from tests.helpers import wait_for


def test_tstp_quiets_and_term_releases_and_leaves(fault_env: FaultEnv) -> None:
    env = fault_env
    env.ledger.enqueue_many(["held-1", "held-2"])
    worker = env.worker(["held-1", "held-2"], "--signals")
    identity = worker.expect("claimed")["identity"]
    liveness = env.liveness()

    worker.signal(signal.SIGTSTP)
    env.wait_for(lambda: any(p.quiet for p in liveness.processes()), timeout=3)
    assert worker.process.poll() is None  # quiet, not stopped: it keeps its jobs
    assert {s.state for s in env.ledger.jobs()} == {"claimed"}

    worker.signal(signal.SIGTERM)
    assert worker.expect("stopped", timeout=10)["held"] == 0
    assert worker.process.wait(timeout=10) == 0
    for job_id in ("held-1", "held-2"):
        last = env.ledger.history(job_id)[-1]
        assert (last.type, last.process, last.data) == (
            "released",
            identity,
            {"reason": "worker stopping"},
        )
    assert not liveness.alive([identity])[identity]
    assert identity not in liveness.known()


def test_recover_exits_cleanly_on_sigterm(fault_env: FaultEnv) -> None:
    env = fault_env
    args = [str(Path(sys.executable).parent / "jobledger"), "--database-url", env.database_url]
    if env.redis is not None:
        args += ["--redis-url", env.redis.url]
    recover = subprocess.Popen(
        [*args, "recover", "--ttl", "1", "--interval", "0.2"], stderr=subprocess.PIPE, text=True
    )
    said: list[str] = []

    def read() -> None:
        assert recover.stderr is not None
        for line in recover.stderr:
            said.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # It says "started" once its signal handlers are in place and it begins to sweep.
    wait_for(lambda: any("started" in line for line in said), timeout=30)
    recover.send_signal(signal.SIGTERM)
    assert recover.wait(timeout=5) == 0
    reader.join(timeout=5)
    log = "".join(said)
    assert "SIGTERM, stopping" in log
    assert "stopped" in log
