"""Worker.claim_delivery: duplicate deliveries are skipped and recorded; dead holders taken over."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator

import pytest

from jobledger import Ledger, Worker
from jobledger.errors import InvalidTransition
from jobledger.identity import new_identity
from jobledger.records import JobStatus
from jobledger.timeline import steps
from tests.aio_facade import AsyncWorkers
from tests.conftest import RECOVERED_STORY, Backend


@pytest.fixture(autouse=True, params=["sync", "async"])
def api(
    request: pytest.FixtureRequest, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Each test here runs with the sync Worker and with AsyncWorker (on AsyncLedger, behind
    a Worker's face: tests/aio_facade.py), on the same database and liveness backend."""
    if request.param == "sync":
        yield "sync"
        return
    workers = AsyncWorkers(
        request.getfixturevalue("loop_thread"), backend.redis_url, backend.prefix
    )
    monkeypatch.setattr(sys.modules[__name__], "Worker", workers)
    yield "async"
    workers.close()


def _unchanged(before: JobStatus, after: JobStatus) -> None:
    """Everything but the version, the time and the hash chain's head is as it was."""
    moved = {"version", "updated_at", "last_hash"}
    fields = [f.name for f in dataclasses.fields(JobStatus) if f.name not in moved]
    assert {f: getattr(after, f) for f in fields} == {f: getattr(before, f) for f in fields}
    assert after.version == before.version + 1


def _skip_event(ledger: Ledger, job_id: str, worker: Worker) -> dict[str, object]:
    last = ledger.history(job_id)[-1]
    assert (last.type, last.process) == ("rejected", worker.identity)
    assert isinstance(last.data, dict)
    return last.data


def test_duplicate_delivery_of_a_completed_job_is_skipped(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("done")
    with Worker(ledger, backend.liveness()) as first, Worker(ledger, backend.liveness()) as second:
        first.complete(first.claim("done"))
        before = ledger.status("done")
        assert second.claim_delivery("done") is None
        assert second.held == []
    _unchanged(before, ledger.status("done"))
    assert _skip_event(ledger, "done", second) == {
        "attempted": "claimed",
        "reason": "duplicate delivery: job is completed",
        "holder": None,
        "current_token": None,
        "state": "completed",
    }
    assert ledger.verify().ok
    assert steps(ledger.history("done"))[-1].state == "completed"


def test_duplicate_delivery_of_a_cancelled_job_is_skipped(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("withdrawn")
    ledger.cancel("withdrawn", reason="not needed")
    before = ledger.status("withdrawn")
    with Worker(ledger, backend.liveness()) as worker:
        assert worker.claim_delivery("withdrawn") is None
    _unchanged(before, ledger.status("withdrawn"))
    data = _skip_event(ledger, "withdrawn", worker)
    assert data["reason"] == "duplicate delivery: job is cancelled"
    assert ledger.verify().ok


def test_duplicate_delivery_while_a_live_process_holds_the_job_is_skipped(
    backend: Backend,
) -> None:
    ledger = backend.ledger
    ledger.enqueue("busy")
    # grace=0: the claim is old enough to take over, so only liveness keeps it.
    with (
        Worker(ledger, backend.liveness()) as holder,
        Worker(ledger, backend.liveness(), grace=0) as second,
    ):
        claim = holder.claim("busy")
        before = ledger.status("busy")
        assert second.claim_delivery("busy") is None
        assert second.held == []
        _unchanged(before, ledger.status("busy"))
        data = _skip_event(ledger, "busy", second)
        assert data == {
            "attempted": "claimed",
            "reason": f"duplicate delivery: job is claimed by live process {holder.identity}",
            "holder": holder.identity,
            "current_token": claim.token,
            "state": "claimed",
        }
        assert steps(ledger.history("busy"))[-1].token == claim.token  # about the live claim
        holder.complete(claim)  # the skip took nothing from the holder
    assert [e.type for e in ledger.history("busy")] == [
        "enqueued",
        "claimed",
        "rejected",
        "completed",
    ]
    assert ledger.verify().ok


def test_duplicate_delivery_of_a_claim_younger_than_the_grace_is_skipped(
    backend: Backend,
) -> None:
    ledger = backend.ledger
    ledger.enqueue("young")
    ghost = new_identity(host="ghost")
    ledger.claim("young", ghost)
    with Worker(ledger, backend.liveness(ttl=1.0)) as worker:
        assert worker.claim_delivery("young") is None
    data = _skip_event(ledger, "young", worker)
    assert data["reason"] == (
        f"duplicate delivery: job is claimed by {ghost}, too recently to presume it dead"
    )
    assert ledger.status("young").claimed_by == ghost


def test_the_same_process_delivered_its_own_job_again_skips_it(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("mine")
    with Worker(ledger, backend.liveness()) as worker:
        claim = worker.claim_delivery("mine")
        assert claim is not None
        assert worker.claim_delivery("mine") is None
        assert worker.held == [claim]
        worker.complete(claim)
    assert [e.type for e in ledger.history("mine")] == [
        "enqueued",
        "claimed",
        "rejected",
        "completed",
    ]


def test_delivery_for_a_dead_holder_takes_the_job_over(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("orphan")
    ghost = new_identity(host="ghost")  # claimed, then never heard of again
    ledger.claim("orphan", ghost)
    with Worker(ledger, backend.liveness(), grace=0) as worker:
        claim = worker.claim_delivery("orphan")
        assert claim is not None
        assert claim.attempt == 2
        worker.complete(claim)
    assert [e.type for e in ledger.history("orphan")] == RECOVERED_STORY
    assert ledger.verify().ok


def test_delivery_of_an_enqueued_job_claims_it_and_of_a_failed_one_is_refused(
    backend: Backend,
) -> None:
    ledger = backend.ledger
    ledger.enqueue_many(["fresh", "broken"])
    with Worker(ledger, backend.liveness()) as worker:
        claim = worker.claim_delivery("fresh")
        assert claim is not None
        assert claim.attempt == 1
        worker.fail(worker.claim("broken"), error="boom")
        # Whether a new delivery of a failed job is a retry is the job system's call.
        with pytest.raises(InvalidTransition):
            worker.claim_delivery("broken")
    assert [e.type for e in ledger.history("broken")] == ["enqueued", "claimed", "failed"]
