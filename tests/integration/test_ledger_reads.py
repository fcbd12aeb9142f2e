"""The reads the recovery projector, the CLI and the demo take from the Ledger, on each backend."""

from __future__ import annotations

from datetime import timedelta

from jobledger import Ledger
from jobledger.identity import new_identity

A, B = new_identity("host-a"), new_identity("host-b")


def test_claim_holders_are_the_processes_holding_claims_now(ledger: Ledger) -> None:
    assert ledger.claim_holders() == set()
    ledger.enqueue_many(["a1", "a2", "b1", "done"])
    for job_id in ("a1", "a2"):
        ledger.claim(job_id, A)
    b1 = ledger.claim("b1", B)
    ledger.complete(ledger.claim("done", B))
    assert ledger.claim_holders() == {A, B}
    ledger.release(b1)
    assert ledger.claim_holders() == {A}


def test_claims_held_by_carry_the_database_clock(ledger: Ledger) -> None:
    ledger.enqueue_many(["a1", "a2", "b1"], queue="q")
    first = ledger.claim("a1", A)
    ledger.claim("a2", A)
    ledger.claim("b1", B)
    ledger.heartbeat(first)
    held = sorted(ledger.claims_held_by([A]))
    assert [claim.job_id for claim in held] == ["a1", "a2"]
    a1, a2 = held
    status = ledger.status("a1")
    assert (a1.queue, a1.claimed_by, a1.claim_token, a1.attempt) == ("q", A, first.token, 1)
    assert a1.claimed_at == status.claimed_at
    assert a1.seen == status.heartbeat_at  # the last heartbeat
    assert a2.seen == a2.claimed_at  # no heartbeat yet: the claim
    assert a1.now >= status.updated_at - timedelta(seconds=1)
    assert ledger.claims_held_by([]) == []


def test_events_after_a_position_come_in_position_order(ledger: Ledger) -> None:
    assert ledger.last_position() == 0
    assert ledger.events_after(0) == []
    ledger.enqueue("j")
    start = ledger.last_position()
    ledger.complete(ledger.claim("j", A))
    after = ledger.events_after(start)
    assert [e.type for e in after] == ["claimed", "completed"]
    assert [e.position for e in after] == sorted(e.position for e in after)
    assert after[-1].position == ledger.last_position()
    assert ledger.events_after(0) == ledger.history("j")


def test_replay_job_and_state_counts_are_the_audits(ledger: Ledger) -> None:
    ledger.enqueue_many(["a", "b"])
    enqueued_at = ledger.status("a").updated_at
    ledger.complete(ledger.claim("a", A))
    assert ledger.state_counts() == {"completed": 1, "enqueued": 1}
    assert ledger.state_counts(enqueued_at) == {"enqueued": 2}
    then = ledger.replay_job("a", enqueued_at)
    assert then is not None
    assert then.state == "enqueued"
    assert ledger.replay_job("a", enqueued_at - timedelta(days=1)) is None
    assert ledger.replay_job("a", ledger.status("a").updated_at) == ledger.status("a")
    assert ledger.replay_job("never", enqueued_at) is None
