"""A recovery projector killed in the middle of a recovery leaves no job half-recovered."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from jobledger import Ledger, RecoveryProjector, SqlLiveness
from jobledger.identity import new_identity
from jobledger.testing import scratch_database

# Holds every `requeued` insert until the test has killed the process that sent it.
SLOW_REQUEUE = """
CREATE FUNCTION slow_requeue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$;
CREATE TRIGGER slow_requeue BEFORE INSERT ON jobledger_events
    FOR EACH ROW WHEN (NEW.type = 'requeued') EXECUTE FUNCTION slow_requeue();
"""


@pytest.fixture
def own_database(postgres_server_url: str) -> Iterator[str]:
    """A database of this test's own: it gets a trigger and has its backends terminated."""
    with scratch_database(postgres_server_url) as url:
        with Ledger(url) as ledger:
            ledger.migrate()
        yield url.render_as_string(hide_password=False)


def _wait_for_sleeping_backend(url: str, timeout: float = 20.0) -> int:
    (pid,) = _wait_for_sleeping_backends(url, 1, timeout)
    return pid


def _wait_for_sleeping_backends(url: str, count: int, timeout: float = 20.0) -> list[int]:
    """The pids of ``count`` backends of this database sleeping in a trigger."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                pids = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event = 'PgSleep'"
                    )
                ).scalars()
                sleeping = [int(pid) for pid in pids]
            if len(sleeping) == count:
                return sleeping
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError(f"{count} of the projector's requeues never reached the trigger")


def _terminate(ledger: Ledger, pids: list[int]) -> None:
    """End the sleeping backends now (the server would notice the lost client only after
    the sleep), then drop the trigger."""
    with ledger.engine.begin() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER slow_requeue ON jobledger_events")


def test_projector_killed_between_abandon_and_requeue(own_database: str) -> None:
    url = own_database
    with Ledger(url) as ledger:
        ledger.enqueue("j")
        ledger.claim("j", new_identity(host="ghost"))  # never registered: dead after the grace
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql(SLOW_REQUEUE)
    options = ["--ttl", "1", "--grace", "0", "--interval", "0.2"]
    recover = subprocess.Popen(
        [sys.executable, "-m", "jobledger.cli", "--database-url", url, "recover", *options],
        stderr=subprocess.DEVNULL,
    )
    try:
        sleeping = _wait_for_sleeping_backend(url)
        recover.send_signal(signal.SIGKILL)
    finally:
        recover.kill()
        recover.wait(timeout=10)
    with Ledger(url) as ledger:
        _terminate(ledger, [sleeping])
        assert ledger.status("j").state == "claimed"  # nothing of the recovery was kept
        projector = RecoveryProjector(ledger, SqlLiveness(ledger, ttl=1), grace=0)
        (recovery,) = projector.run_once()
        assert recovery.requeued
        assert [e.type for e in ledger.history("j")] == [
            "enqueued",
            "claimed",
            "abandoned",
            "requeued",
        ]
        assert ledger.verify().ok


# Holds the `requeued` inserts of the jobs whose ids end in 7 only.
SLOW_SOME_REQUEUES = SLOW_REQUEUE.replace(
    "BEGIN PERFORM pg_sleep(60);",
    "BEGIN IF right(NEW.job_id, 1) = '7' THEN PERFORM pg_sleep(60); END IF;",
)


def test_projector_killed_amid_concurrent_abandons_leaves_each_job_whole(
    own_database: str,
) -> None:
    """Four abandons in flight when SIGKILL comes: each job is recovered whole or not at all.

    It also shows that a slow claim holds one thread, not the sweep: all four threads
    reach a slow job.
    """
    url = own_database
    ids = [f"j{n:02d}" for n in range(40)]
    slow = [job_id for job_id in ids if job_id.endswith("7")]
    with Ledger(url) as ledger:
        ledger.enqueue_many(ids)
        for job_id in ids:
            ledger.claim(job_id, new_identity(host="ghost"))
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql(SLOW_SOME_REQUEUES)
    options = ["--ttl", "1", "--grace", "0", "--interval", "0.2", "--abandon-concurrency", "4"]
    recover = subprocess.Popen(
        [sys.executable, "-m", "jobledger.cli", "--database-url", url, "recover", *options],
        stderr=subprocess.DEVNULL,
    )
    try:
        # The 4 threads end up held by the 4 slow jobs, in the middle of their transactions.
        sleeping = _wait_for_sleeping_backends(url, len(slow))
        recover.send_signal(signal.SIGKILL)
    finally:
        recover.kill()
        recover.wait(timeout=10)
    whole = ["enqueued", "claimed", "abandoned", "requeued"]
    with Ledger(url) as ledger:
        _terminate(ledger, sleeping)
        histories = {job_id: [e.type for e in ledger.history(job_id)] for job_id in ids}
        untouched = sorted(job_id for job_id, h in histories.items() if h == whole[:2])
        assert all(h in (whole, whole[:2]) for h in histories.values()), histories
        assert set(slow) <= set(untouched)  # nothing of the transactions killed was kept
        assert ledger.verify().ok
        projector = RecoveryProjector(ledger, SqlLiveness(ledger, ttl=1), grace=0)
        assert sorted(r.job_id for r in projector.run_once()) == untouched
        assert {ledger.status(job_id).state for job_id in ids} == {"enqueued"}
