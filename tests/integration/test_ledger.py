"""The Ledger's commands against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from jobledger import Claim, Ledger, RecoveryPolicy
from jobledger.errors import (
    AlreadyClaimed,
    DuplicateJob,
    InvalidIdentity,
    InvalidJobId,
    InvalidPayload,
    InvalidTransition,
    StaleClaim,
    UnknownJob,
)
from jobledger.identity import new_identity
from jobledger.lifecycle import MOVES

A, B = new_identity(), new_identity()


@pytest.fixture
def ledger(either_ledger: Ledger) -> Ledger:
    """Each test here runs on the sync Ledger and on AsyncLedger (tests/aio_facade.py)."""
    return either_ledger


def test_happy_path_records_every_step(ledger: Ledger) -> None:
    ledger.enqueue("j", queue="mail", data={"to": "a@b.c"})
    claim = ledger.claim("j", process=A)
    assert claim == Claim("j", token=2, attempt=1, process=A)
    assert ledger.heartbeat(claim, progress={"sent": 1}) is True
    done = ledger.complete(claim, result={"ok": True})
    assert (done.state, done.version, done.attempt, done.claimed_by) == ("completed", 4, 1, None)
    history = ledger.history("j")
    assert [e.type for e in history] == ["enqueued", "claimed", "heartbeat", "completed"]
    assert [e.process for e in history] == [None, A, A, A]
    assert history[0].data == {"queue": "mail", "data": {"to": "a@b.c"}}
    assert history[-1].data == {"result": {"ok": True}}
    positions = [e.position for e in history]
    assert positions == sorted(positions)
    assert all(a.hash == b.prev_hash for a, b in itertools.pairwise(history))
    assert ledger.status("j") == done


def test_timestamps_come_from_the_database_and_never_run_backwards(ledger: Ledger) -> None:
    ledger.enqueue("j")
    claim = ledger.claim("j", A)
    ledger.complete(claim)
    times = [e.recorded_at for e in ledger.history("j")]
    assert times == sorted(times)
    assert all(t.tzinfo is not None for t in times)
    status = ledger.status("j")
    assert status.enqueued_at == times[0]
    assert status.claimed_at == times[1]
    assert status.finished_at == times[2]


# --- every state reachable, every command tried from it -----------------------------------


def _to_state(ledger: Ledger, state: str) -> Claim | None:
    """Drive job 'j' into ``state``; the last claim made on the way (if any)."""
    ledger.enqueue("j")
    if state == "enqueued":
        return None
    if state == "cancelled":
        ledger.cancel("j")
        return None
    claim = ledger.claim("j", A)
    if state == "completed":
        ledger.complete(claim)
    elif state == "failed":
        ledger.fail(claim, "boom")
    elif state == "abandoned":
        ledger.abandon("j", claim.token, reason="holder vanished")
    return claim


STATES = ["enqueued", "claimed", "completed", "failed", "abandoned", "cancelled"]
OPERATOR_COMMANDS: dict[str, Callable[[Ledger], object]] = {
    "claimed": lambda ledger: ledger.claim("j", B),
    "requeued": lambda ledger: ledger.requeue("j"),
    "cancelled": lambda ledger: ledger.cancel("j"),
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", list(OPERATOR_COMMANDS))
def test_operator_commands_follow_the_machine(ledger: Ledger, state: str, event: str) -> None:
    _to_state(ledger, state)
    before = ledger.history("j")
    legal = (state, event) in MOVES
    if legal:
        OPERATOR_COMMANDS[event](ledger)
        after = ledger.history("j")
        assert [e.type for e in after[len(before) :]] == [event]
        assert ledger.status("j").state == MOVES[(state, event)]
        return
    expected = AlreadyClaimed if (state, event) == ("claimed", "claimed") else InvalidTransition
    with pytest.raises(expected) as caught:
        OPERATOR_COMMANDS[event](ledger)
    assert "'j'" in str(caught.value)
    assert ledger.history("j") == before  # nothing written


HOLDER_COMMANDS: dict[str, Callable[[Ledger, Claim], object]] = {
    "heartbeat": lambda ledger, claim: ledger.heartbeat(claim),
    "completed": lambda ledger, claim: ledger.complete(claim),
    "failed": lambda ledger, claim: ledger.fail(claim, "x"),
    "released": lambda ledger, claim: ledger.release(claim),
}


@pytest.mark.parametrize("event", list(HOLDER_COMMANDS))
def test_holder_commands_move_a_claimed_job(ledger: Ledger, event: str) -> None:
    claim = _to_state(ledger, "claimed")
    assert claim is not None
    HOLDER_COMMANDS[event](ledger, claim)
    assert ledger.history("j")[-1].type == event
    assert ledger.status("j").state == MOVES[("claimed", event)]


@pytest.mark.parametrize("state", ["completed", "failed", "abandoned"])
@pytest.mark.parametrize("event", list(HOLDER_COMMANDS))
def test_holder_commands_after_the_claim_ended_are_refused_and_recorded(
    ledger: Ledger, state: str, event: str
) -> None:
    claim = _to_state(ledger, state)
    assert claim is not None
    before = ledger.status("j")
    with pytest.raises(StaleClaim) as caught:
        HOLDER_COMMANDS[event](ledger, claim)
    assert caught.value.token == claim.token
    assert caught.value.current_token is None
    after = ledger.status("j")
    assert after.state == before.state == state
    assert after.version == before.version + 1
    rejected = ledger.history("j")[-1]
    assert rejected.type == "rejected"
    assert rejected.process == A
    assert rejected.data["attempted"] == event
    assert rejected.data["token"] == claim.token


def test_abandon_with_a_stale_token_writes_nothing(ledger: Ledger) -> None:
    claim = _to_state(ledger, "completed")
    assert claim is not None
    before = ledger.history("j")
    with pytest.raises(StaleClaim):
        ledger.abandon("j", claim.token, reason="late")
    assert ledger.history("j") == before


def test_release_puts_the_job_back_for_another_attempt(ledger: Ledger) -> None:
    first = _to_state(ledger, "claimed")
    assert first is not None
    ledger.release(first, reason="shutting down")
    second = ledger.claim("j", B)
    assert (second.attempt, second.token) == (2, 4)
    assert ledger.status("j").claimed_by == B


def test_failed_job_requeued_and_retried(ledger: Ledger) -> None:
    _to_state(ledger, "failed")
    assert ledger.status("j").last_error == "boom"
    ledger.requeue("j", reason="operator retry")
    claim = ledger.claim("j", B)
    assert claim.attempt == 2
    ledger.complete(claim)
    assert ledger.status("j").state == "completed"


# --- fencing ------------------------------------------------------------------------------


def test_fencing_story(ledger: Ledger) -> None:
    ledger.enqueue("j")
    claim_a = ledger.claim("j", A)
    ledger.abandon("j", claim_a.token, reason="A presumed dead", process=B)
    ledger.requeue("j", reason="policy")
    claim_b = ledger.claim("j", B)
    assert claim_b.token != claim_a.token

    with pytest.raises(StaleClaim) as caught:
        ledger.complete(claim_a, result={"from": "zombie"})
    assert caught.value.current_token == claim_b.token
    assert A in str(caught.value)

    done = ledger.complete(claim_b, result={"from": "B"})
    assert done.state == "completed"
    types = [e.type for e in ledger.history("j")]
    assert types == [
        "enqueued",
        "claimed",
        "abandoned",
        "requeued",
        "claimed",
        "rejected",
        "completed",
    ]
    rejected = ledger.history("j")[5]
    assert rejected.process == A
    assert rejected.data == {
        "attempted": "completed",
        "token": claim_a.token,
        "current_token": claim_b.token,
        "holder": B,
        "state": "claimed",
    }
    abandoned = ledger.history("j")[2]
    assert abandoned.data == {"token": claim_a.token, "holder": A, "reason": "A presumed dead"}


def test_a_stale_heartbeat_is_refused_even_when_throttled(database_url: str) -> None:
    with Ledger(database_url, heartbeat_interval=3600) as ledger:
        ledger.enqueue("j")
        claim = ledger.claim("j", A)
        assert ledger.heartbeat(claim) is False  # inside the interval: nothing written
        ledger.abandon("j", claim.token, reason="test")
        with pytest.raises(StaleClaim):
            ledger.heartbeat(claim)
        assert [e.type for e in ledger.history("j")][-1] == "rejected"


def test_heartbeats_are_throttled_per_job(database_url: str) -> None:
    with Ledger(database_url, heartbeat_interval=0.3) as ledger:
        ledger.enqueue_many(["x", "y"])
        cx, cy = ledger.claim("x", A), ledger.claim("y", A)
        assert ledger.heartbeat(cx) is False  # just claimed
        time.sleep(0.35)
        assert ledger.heartbeat(cx) is True
        assert ledger.heartbeat(cx) is False
        assert ledger.heartbeat(cy) is True  # another job has its own interval
        assert [e.type for e in ledger.history("x")].count("heartbeat") == 1


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        lambda ledger: ledger.claim("nope", A),
        lambda ledger: ledger.heartbeat(Claim("nope", 2, 1, A)),
        lambda ledger: ledger.complete(Claim("nope", 2, 1, A)),
        lambda ledger: ledger.fail(Claim("nope", 2, 1, A), "x"),
        lambda ledger: ledger.release(Claim("nope", 2, 1, A)),
        lambda ledger: ledger.abandon("nope", 2, "x"),
        lambda ledger: ledger.requeue("nope"),
        lambda ledger: ledger.cancel("nope"),
        lambda ledger: ledger.status("nope"),
        lambda ledger: ledger.history("nope"),
    ],
)
def test_unknown_jobs_are_named(ledger: Ledger, command: Callable[[Ledger], object]) -> None:
    with pytest.raises(UnknownJob, match="'nope'"):
        command(ledger)
    assert list(ledger.jobs()) == []


def test_duplicate_enqueue_is_refused(ledger: Ledger) -> None:
    ledger.enqueue("j", data={"first": True})
    with pytest.raises(DuplicateJob, match="'j'"):
        ledger.enqueue("j", data={"second": True})
    assert len(ledger.history("j")) == 1


@pytest.mark.parametrize("data", [{"x": float("nan")}, {1: 2}, {"s": "a\x00"}, object()])
def test_unstorable_data_is_refused_before_writing(ledger: Ledger, data: object) -> None:
    with pytest.raises(InvalidPayload):
        ledger.enqueue("j", data=data)
    ledger.enqueue("k")
    claim = ledger.claim("k", A)
    with pytest.raises(InvalidPayload):
        ledger.complete(claim, result=data)
    assert [e.type for e in ledger.history("k")] == ["enqueued", "claimed"]
    assert [s.job_id for s in ledger.jobs()] == ["k"]


@pytest.mark.parametrize("bad", ["", "x" * 256, None, 7])
def test_bad_job_ids_are_refused(ledger: Ledger, bad: object) -> None:
    with pytest.raises(InvalidJobId):
        ledger.enqueue(bad)  # type: ignore[arg-type]


def test_malformed_identity_cannot_claim(ledger: Ledger) -> None:
    ledger.enqueue("j")
    with pytest.raises(InvalidIdentity):
        ledger.claim("j", "worker-7")
    assert ledger.status("j").state == "enqueued"


def test_jobs_filters(ledger: Ledger) -> None:
    ledger.enqueue_many(["a", "b", "c"], queue="q1")
    ledger.enqueue("d", queue="q2")
    ledger.claim("b", A)
    assert [s.job_id for s in ledger.jobs(queue="q1")] == ["a", "b", "c"]
    assert [s.job_id for s in ledger.jobs(state="claimed")] == ["b"]
    assert [s.job_id for s in ledger.jobs(claimed_by=A)] == ["b"]
    assert [s.job_id for s in ledger.jobs(state="enqueued", queue="q2")] == ["d"]
    with pytest.raises(ValueError, match="unknown state"):
        ledger.jobs(state="running")


def test_abandon_with_a_policy_requeues_in_the_same_step(ledger: Ledger) -> None:
    ledger.enqueue_many(["again", "capped"])
    policy = RecoveryPolicy(max_attempts=2)
    again = ledger.claim("again", new_identity())
    after = ledger.abandon("again", again.token, "holder died", policy=policy)
    assert (after.state, after.attempt, after.version) == ("enqueued", 1, 4)
    assert [e.type for e in ledger.history("again")][-2:] == ["abandoned", "requeued"]
    for _ in range(2):
        capped = ledger.claim("capped", new_identity())
        after = ledger.abandon("capped", capped.token, "holder died", policy=policy)
    assert (after.state, after.attempt) == ("abandoned", 2)  # its last allowed attempt
    assert [e.type for e in ledger.history("capped")][-2:] == ["claimed", "abandoned"]
    assert ledger.verify().ok
