"""The demo kills a worker that holds a job, whichever it is, and never waits forever.

Before: the demo waited, without end, for its *first* worker to hold a job; on a loaded
machine that worker could start after the others had taken every job, finish idle, and
leave the demo hanging. Stand-in worker processes (``sleep``) are killed for real.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from rich.console import Console

from jobledger import Ledger, demo
from jobledger.identity import new_identity


@pytest.fixture
def workers() -> Iterator[dict[str, subprocess.Popen[str]]]:
    made = {new_identity(): subprocess.Popen(["sleep", "60"], text=True) for _ in range(3)}
    yield made
    for process in made.values():
        process.kill()
        process.wait()


def test_the_victim_is_a_live_worker_holding_a_job(
    sqlite_ledger: Ledger, workers: dict[str, subprocess.Popen[str]]
) -> None:
    first, second, third = workers
    workers[first].kill()  # finished and gone, as an idle first worker would be
    workers[first].wait()
    sqlite_ledger.enqueue_many(["a", "b"])
    sqlite_ledger.claim("a", first)  # a claim of a process that exited: not a victim
    sqlite_ledger.claim("b", third)
    names = {identity: f"worker-{n}" for n, identity in enumerate(workers)}
    victim = demo._kill_one_mid_job(sqlite_ledger, workers, names, Console(quiet=True))
    assert victim == third
    assert workers[third].wait(timeout=10) == -9  # SIGKILLed
    assert workers[second].poll() is None


def test_no_worker_holding_a_job_ends_the_wait(
    sqlite_ledger: Ledger,
    workers: dict[str, subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "KILL_WITHIN", 0.5)
    names = dict.fromkeys(workers, "worker")
    assert demo._kill_one_mid_job(sqlite_ledger, workers, names, Console(quiet=True)) is None
    assert all(process.poll() is None for process in workers.values())
