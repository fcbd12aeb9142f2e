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
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                pid = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event = 'PgSleep'"
                    )
                ).scalar()
            if pid is not None:
                return int(pid)
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("the projector never reached the requeue")


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
        with ledger.engine.begin() as conn:
            # The server would notice the lost client only after the sleep; end it now.
            conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": sleeping})
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER slow_requeue ON jobledger_events")
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
