"""On SQLite, a writer holding the ledger's write lock past the TTL kills no live worker.

SQLite has one write lock per file. Lease refreshes must not queue behind it,
or a long transaction (another process's, a rebuild's, or just many busy
workers) lets every lease lapse while the projector, which can still read,
queues abandons that go through the moment the lock frees.
"""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import text

from tests.faults.conftest import ROOT, TTL, FaultEnv, WorkerProcess

HOLD = 3 * TTL  # how long the other writer keeps the lock: well past the TTL

_HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


def _ledger_file(env: FaultEnv) -> str:
    return env.database_url.removeprefix("sqlite:///")


def _hold_write_lock(path: str, seconds: float) -> subprocess.Popen[str]:
    """Another process that takes ``path``'s write lock (BEGIN IMMEDIATE) for ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, path, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _workers_holding(env: FaultEnv, count: int, *extra: str) -> list[WorkerProcess]:
    jobs = [f"held-{n}" for n in range(count)]
    env.ledger.enqueue_many(jobs)
    workers = [env.worker([job], *extra) for job in jobs]
    for worker in workers:
        worker.expect("claimed")
    return workers


def _assert_all_lived(env: FaultEnv, workers: list[WorkerProcess]) -> None:
    for n, worker in enumerate(workers):
        assert worker.expect("completed", timeout=30)["job"] == f"held-{n}"
        assert worker.expect("done")["presumed_dead"] is False
        assert env.types(f"held-{n}") == ["enqueued", "claimed", "completed"]
    assert all("presumed dead" not in "".join(w.stderr) for w in workers)


def test_a_writer_holding_the_lock_past_the_ttl_kills_no_worker(sqlite_env: FaultEnv) -> None:
    env = sqlite_env
    projector = env.projector(grace=0)
    workers = _workers_holding(env, 3, "--complete-after", "1")
    holder = _hold_write_lock(_ledger_file(env), HOLD)
    assert holder.wait(timeout=HOLD + 30) == 0
    _assert_all_lived(env, workers)
    assert projector.counters.abandoned == 0


def test_a_writer_blocking_the_lease_store_itself_kills_no_worker(sqlite_env: FaultEnv) -> None:
    # Second line of defence: refreshes cannot get through, so lapses are not trusted, and a
    # worker whose refresh waited for the store does not presume itself dead. (All three
    # leases lapse at once here, so the mass-death guard is set aside to test this alone.)
    env = sqlite_env
    projector = env.projector(grace=0, mass_death_minimum=100)
    # They finish well after the block, once the projector has seen their leases again.
    workers = _workers_holding(env, 3, "--complete-after", str(HOLD + 2 * TTL))
    holder = _hold_write_lock(f"{_ledger_file(env)}-leases", HOLD)
    assert holder.wait(timeout=HOLD + 30) == 0
    _assert_all_lived(env, workers)
    assert projector.counters.abandoned == 0
    assert projector.counters.unavailable_sweeps > 0  # it saw the block and held back


def test_a_long_rebuild_kills_no_worker(sqlite_env: FaultEnv) -> None:
    env = sqlite_env
    _grow(env, jobs=20_000, doublings=4)  # 320k events: the rebuild holds the lock for seconds
    projector = env.projector(grace=0)
    workers = _workers_holding(env, 3, "--complete-after", "1")
    rebuild = subprocess.run(
        [sys.executable, "-m", "jobledger.cli", "--database-url", env.database_url, "rebuild"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuild.returncode == 0, rebuild.stderr
    _assert_all_lived(env, workers)
    assert projector.counters.abandoned == 0


def test_a_dozen_full_speed_workers_kill_none_of_themselves(sqlite_env: FaultEnv) -> None:
    env = sqlite_env
    projector = env.projector(grace=0)
    workers = _workers_holding(env, 12, "--complete-after", "4", "--churn")
    churned = [worker.expect("churned", timeout=60) for worker in workers]
    assert sum(c["jobs"] for c in churned) > 12  # they did work
    assert [c["stale"] for c in churned] == [0] * 12
    _assert_all_lived(env, workers)
    assert projector.counters.abandoned == 0


def _grow(env: FaultEnv, jobs: int, doublings: int) -> None:
    """``jobs * 2**doublings`` one-event histories, fast: enqueued once, then copied in SQL."""
    env.ledger.enqueue_many([f"bulk-{n}" for n in range(jobs)])
    with env.ledger.engine.begin() as conn:
        for n in range(doublings):
            conn.execute(
                text(
                    "INSERT INTO jobledger_events (job_id, version, type, process, data,"
                    " recorded_at, prev_hash, hash) SELECT job_id || :suffix, version, type,"
                    " process, data, recorded_at, prev_hash, hash FROM jobledger_events"
                ),
                {"suffix": f"-{n}"},
            )
