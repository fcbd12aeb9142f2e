"""The scale benchmark's bulk history is a real one: verify passes, and the Ledger and the
sealer carry on from it (benchmarks/scale_data.py; the 10M-event run is benchmarks/scale.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from jobledger import Ledger
from jobledger.records import Claim
from jobledger.sealer import Sealer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import scale_data
from common import libpq_url

JOBS, HOLDERS = 1_000, 25


def _build(url: str) -> scale_data.Sealing:
    holders = list(scale_data.iter_holders(HOLDERS))
    start = scale_data.start_time(JOBS)
    return scale_data.build(libpq_url(url), JOBS, holders, start, lambda _: None)


def _seal(sealer: Sealer, expected: int, timeout: float = 90.0) -> int:
    """Seal until ``expected`` events are (other sessions' open transactions anywhere on the
    server hold the catch-up's horizon back for a while); how many were."""
    sealed, deadline = 0, time.monotonic() + timeout
    while sealed < expected and time.monotonic() < deadline:
        sealed += sealer.run_once()
        time.sleep(0.02)
    return sealed + sealer.run_once()


def test_the_bulk_history_verifies_and_the_mix_is_as_documented(pg_url: str) -> None:
    sealing = _build(pg_url)
    with Ledger(pg_url) as ledger:
        report = ledger.verify(workers=1)
        assert report.ok, report.problems
        assert (report.jobs, report.events) == (JOBS, 5 * JOBS)
        assert (report.sealed, report.unsealed) == (5 * JOBS, 0)
        assert report.head is not None
        assert report.head.digest == sealing.digest
        assert ledger.claim_holders() == set(scale_data.iter_holders(HOLDERS))
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        held = conn.execute(
            text("SELECT claimed_by, count(*) FROM jobledger_jobs GROUP BY claimed_by")
        ).all()
    engine.dispose()
    claims = {holder: count for holder, count in held if holder is not None}
    assert set(claims.values()) == {JOBS * scale_data.claimed_share() / HOLDERS}


def test_commands_and_the_sealer_carry_on_from_the_bulk_history(pg_url: str) -> None:
    _build(pg_url)
    with Ledger(pg_url) as ledger:
        held = ledger.status(scale_data.job_id(0))  # number % 100 == 0: claimed, in progress
        assert held.state == "claimed"
        assert held.claimed_by is not None
        assert held.claim_token is not None
        ledger.complete(Claim(held.job_id, held.claim_token, held.attempt, held.claimed_by))
        released = scale_data.job_id(96)  # 96 and 97: released back to their queue
        assert ledger.status(released).state == "enqueued"
        ledger.complete(ledger.claim(released, "bench-host:1:0123456789abcdef"))
        ledger.enqueue("after-the-bulk", queue="mail")
        assert _seal(Sealer(ledger), 4) == 4
        report = ledger.verify(workers=1)
        assert report.ok, report.problems
        assert (report.sealed, report.unsealed) == (5 * JOBS + 4, 0)
