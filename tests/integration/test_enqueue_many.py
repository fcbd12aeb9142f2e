from __future__ import annotations

import pytest
from sqlalchemy import func, select

from jobledger import Ledger
from jobledger.errors import DuplicateJob, InvalidPayload
from jobledger.schema import events


@pytest.fixture
def ledger(either_ledger: Ledger) -> Ledger:
    """Each test here runs on the sync Ledger and on AsyncLedger (tests/aio_facade.py)."""
    return either_ledger


def _event_count(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def test_ten_thousand_jobs(ledger: Ledger) -> None:
    ids = [f"job-{i:05d}" for i in range(10_000)]
    assert (
        ledger.enqueue_many([(job_id, {"n": i}) for i, job_id in enumerate(ids)], queue="bulk")
        == 10_000
    )
    statuses = list(ledger.jobs(queue="bulk"))
    assert [s.job_id for s in statuses] == ids
    assert {s.state for s in statuses} == {"enqueued"}
    assert _event_count(ledger) == 10_000
    assert ledger.history("job-04242")[0].data == {"queue": "bulk", "data": {"n": 4242}}


def test_batches_are_separate_transactions(database_url: str) -> None:
    with Ledger(database_url, batch_size=100) as ledger:
        ledger.enqueue("dup-250")
        ids = [f"dup-{i}" for i in range(300)]
        with pytest.raises(DuplicateJob) as caught:
            ledger.enqueue_many(ids)
        assert caught.value.job_ids == ["dup-250"]
        assert caught.value.committed == 200  # batches 0-99 and 100-199; 200-299 wrote nothing
        assert "200 jobs of earlier batches" in str(caught.value)
        assert _event_count(ledger) == 201
        assert ledger.status("dup-199").state == "enqueued"
        with pytest.raises(Exception, match="does not exist"):
            ledger.status("dup-200")


def test_repeated_ids_and_bad_data_are_refused_before_any_write(ledger: Ledger) -> None:
    with pytest.raises(DuplicateJob, match="'b'"):
        ledger.enqueue_many(["a", "b", "c", "b"])
    with pytest.raises(InvalidPayload):
        ledger.enqueue_many([("a", {"ok": 1}), ("z", {"bad": float("inf")})])
    assert _event_count(ledger) == 0
