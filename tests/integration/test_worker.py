"""Worker behaviour in-process, against real Redis and real SQL leases."""

from __future__ import annotations

import threading
import time

import pytest

from jobledger import RecoveryPolicy, Worker
from jobledger.errors import AlreadyClaimed, AttemptsExhausted, NotClaiming, StaleClaim
from jobledger.identity import new_identity
from tests.conftest import Backend
from tests.helpers import wait_for


def test_worker_registers_works_and_leaves(backend: Backend) -> None:
    ledger, liveness = backend.ledger, backend.liveness(ttl=1.0)
    ledger.enqueue_many(["a", "b"])
    with Worker(ledger, liveness) as worker:
        assert liveness.alive([worker.identity])[worker.identity]
        claim = worker.claim("a")
        assert worker.held == [claim]
        worker.heartbeat(claim, progress={"step": 1})
        worker.complete(claim, result={"ok": True})
        assert worker.held == []
        held_at_exit = worker.claim("b")
    assert not liveness.alive([worker.identity])[worker.identity]
    assert worker.identity not in liveness.known()
    assert ledger.status("a").state == "completed"
    assert ledger.status("b").state == "enqueued"  # released on the way out
    assert ledger.history("b")[-1].data == {"reason": "worker stopping"}
    assert held_at_exit.process == worker.identity


def test_refresh_thread_keeps_a_busy_worker_alive(backend: Backend) -> None:
    # A TTL long enough that a lease write slowed by this busy thread (and by a loaded
    # machine) is not taken for a blocked SQLite store (a quarter of the TTL).
    liveness = backend.liveness(ttl=1.2)
    with Worker(backend.ledger, liveness) as worker:
        deadline = time.monotonic() + 4.0  # more than 3 TTLs of a main thread doing "work"
        while time.monotonic() < deadline:
            sum(range(10_000))
            assert liveness.alive([worker.identity])[worker.identity]


def test_busy_count_and_quiet_are_published(backend: Backend) -> None:
    liveness = backend.liveness(ttl=0.6)
    backend.ledger.enqueue_many(["a", "b"])
    with Worker(backend.ledger, liveness) as worker:
        worker.claim("a")
        worker.claim("b")
        worker.quiet()
        wait_for(lambda: [(p.busy, p.quiet) for p in liveness.processes()] == [(2, True)], 5)
        (published,) = liveness.processes()
        assert (published.busy, published.quiet) == (2, True)
        with pytest.raises(NotClaiming):
            worker.claim("c")


def test_takeover_from_a_dead_holder(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("j")
    ghost = new_identity(host="ghost")  # claimed, then never heard of again
    dead_claim = ledger.claim("j", ghost)
    with Worker(ledger, backend.liveness(), grace=0) as worker:
        claim = worker.claim("j")
        assert claim.attempt == 2
        types = [(e.type, e.process) for e in ledger.history("j")]
        assert types[-3:] == [
            ("abandoned", worker.identity),
            ("requeued", worker.identity),
            ("claimed", worker.identity),
        ]
        assert ledger.history("j")[2].data["holder"] == ghost
        with pytest.raises(StaleClaim):
            ledger.complete(dead_claim)


def test_takeover_leaves_a_job_on_its_last_attempt_abandoned(backend: Backend) -> None:
    """A job that killed its holder on the last allowed attempt is not run again."""
    ledger = backend.ledger
    ledger.enqueue_many(["capped", "free"], queue="fragile")
    ghost = new_identity(host="ghost")
    ledger.claim("capped", ghost)
    ledger.claim("free", ghost)
    policy = RecoveryPolicy(max_attempts=3, max_attempts_by_queue={"fragile": 1})
    with Worker(ledger, backend.liveness(), policy=policy, grace=0) as worker:
        with pytest.raises(AttemptsExhausted, match=r"attempt 1 of 1") as caught:
            worker.claim("capped")
        assert caught.value.holder == ghost
        assert worker.held == []
    status = ledger.status("capped")
    assert (status.state, status.attempt, status.claimed_by) == ("abandoned", 1, None)
    last = ledger.history("capped")[-1]
    assert (last.type, last.process, last.data["holder"]) == ("abandoned", worker.identity, ghost)

    with Worker(
        ledger, backend.liveness(), policy=RecoveryPolicy(max_attempts=2), grace=0
    ) as worker:
        assert worker.claim("free").attempt == 2  # below its cap: taken over


def test_takeover_waits_for_the_grace_period(backend: Backend) -> None:
    """As the projector does: a claim younger than the grace is never taken, dead or not."""
    ledger = backend.ledger
    ledger.enqueue("j")
    ledger.claim("j", new_identity(host="ghost"))
    with Worker(ledger, backend.liveness(ttl=1.0)) as worker:
        assert worker.grace == 1.0
        with pytest.raises(AlreadyClaimed) as caught:
            worker.claim("j")
        assert caught.value.held_for is not None
        assert caught.value.held_for < 1.0
        assert [e.type for e in ledger.history("j")] == ["enqueued", "claimed"]
        time.sleep(1.0 - caught.value.held_for + 0.05)
        assert worker.claim("j").attempt == 2


def test_no_takeover_from_a_live_holder(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("j")
    with Worker(ledger, backend.liveness()) as first, Worker(ledger, backend.liveness()) as second:
        first.claim("j")
        with pytest.raises(AlreadyClaimed) as caught:
            second.claim("j")
        assert caught.value.holder == first.identity
        assert ledger.status("j").claimed_by == first.identity


def test_lost_record_is_re_registered(backend: Backend) -> None:
    """The record vanishes while the worker is healthy: a backend that forgot it."""
    liveness = backend.liveness(ttl=0.9)
    with Worker(backend.ledger, liveness) as worker:
        liveness.unregister(worker.identity)  # as a FLUSH or failover would
        assert not liveness.alive([worker.identity])[worker.identity]
        # Its refresh (every TTL/3) finds the record gone and registers again.
        wait_for(lambda: liveness.alive([worker.identity])[worker.identity], liveness.ttl)
        assert liveness.alive([worker.identity])[worker.identity]
        assert not worker.presumed_dead


def test_stop_waits_for_jobs_finished_by_other_threads(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue_many(["slow", "stuck"])
    worker = Worker(ledger, backend.liveness(), stop_timeout=3).start()
    slow, stuck = worker.claim("slow"), worker.claim("stuck")
    finisher = threading.Timer(0.3, lambda: worker.complete(slow))
    finisher.start()
    started = time.monotonic()
    worker.stop(timeout=1.0)
    assert 0.9 < time.monotonic() - started < 2.5  # waited for "stuck", then released it
    assert ledger.status("slow").state == "completed"
    assert ledger.status("stuck").state == "enqueued"
    assert stuck.job_id not in {c.job_id for c in worker.held}


def test_a_claim_whose_reply_was_lost_is_adopted(backend: Backend) -> None:
    """The claim committed but its reply never came (the connection broke): claiming again
    hands the worker its own claim instead of AlreadyClaimed naming itself."""
    ledger = backend.ledger
    ledger.enqueue("j")
    with Worker(ledger, backend.liveness()) as worker:
        lost = ledger.claim("j", worker.identity)  # as if the reply to worker.claim was lost
        assert worker.claim("j") == lost
        assert worker.held == [lost]
        with pytest.raises(AlreadyClaimed):
            worker.claim("j")  # a second claim of a job it holds is still the caller's mistake
        worker.complete(lost)
    assert [e.type for e in ledger.history("j")] == ["enqueued", "claimed", "completed"]


def test_two_threads_delivered_the_same_job_get_one_claim(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job system hands one job to two threads of one process at once: one claims it,
    the other is told it is a duplicate (not handed the first thread's claim as a lost
    reply, which would run the job twice)."""
    ledger = backend.ledger
    claim = ledger.claim

    def slow_to_return(job_id: str, process: str, **options: object) -> object:
        won = claim(job_id, process, **options)  # type: ignore[arg-type]
        time.sleep(0.05)  # the winner is descheduled before it notes its claim
        return won

    monkeypatch.setattr(ledger, "claim", slow_to_return)
    jobs = [f"j{n}" for n in range(5)]
    ledger.enqueue_many(jobs)
    with Worker(ledger, backend.liveness()) as worker:
        for job_id in jobs:
            start = threading.Barrier(2)
            got: list[object] = []

            def deliver(
                job_id: str = job_id, start: threading.Barrier = start, got: list[object] = got
            ) -> None:
                start.wait()
                got.append(worker.claim_delivery(job_id))

            threads = [threading.Thread(target=deliver) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            claims = [claim for claim in got if claim is not None]
            assert len(claims) == 1, (job_id, got)
            worker.complete(claims[0])  # type: ignore[arg-type]
    for job_id in jobs:
        types = [e.type for e in ledger.history(job_id)]
        assert types == ["enqueued", "claimed", "rejected", "completed"], (job_id, types)
