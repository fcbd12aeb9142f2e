"""The pure decision core: what a command appends given the job as loaded, no database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from jobledger import decisions
from jobledger.chain import GENESIS, event_hash
from jobledger.errors import (
    AlreadyClaimed,
    DuplicateJob,
    InvalidJobId,
    InvalidTransition,
    StaleClaim,
    UnknownJob,
)
from jobledger.lifecycle import MOVES, EventType, State
from jobledger.policy import RecoveryPolicy
from jobledger.projection import check_link, fold_all
from jobledger.records import Claim, Event, JobStatus

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
WORKER, OTHER, OPERATOR = "host:1:a", "host:2:b", "ops"
INTERVAL = timedelta(seconds=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def apply(status: JobStatus | None, plan: decisions.Plan, now: datetime) -> JobStatus:
    """The status after writing ``plan`` (what a command would store)."""
    steps = decisions.sealed(status, plan, "job-1", now)
    assert steps, "the plan writes something"
    return steps[-1][1]


def enqueued(queue: str = "default") -> JobStatus:
    plan = decisions.enqueue(None, T0, "job-1", OPERATOR, {"queue": queue, "data": None})
    return apply(None, plan, T0)


def claimed(queue: str = "default", status: JobStatus | None = None) -> tuple[JobStatus, Claim]:
    status = status if status is not None else enqueued(queue)
    now = at(1) if status.updated_at < at(1) else status.updated_at + timedelta(seconds=1)
    status = apply(status, decisions.claim(status, now, "job-1", WORKER), now)
    assert status.claim_token is not None
    return status, Claim("job-1", status.claim_token, status.attempt, WORKER)


def in_state(state: str) -> JobStatus:
    """A job brought to ``state`` through legal commands."""
    if state == State.ENQUEUED:
        return enqueued()
    if state == State.CANCELLED:
        return apply(enqueued(), _operator(enqueued(), EventType.CANCELLED), at(1))
    status, claim = claimed()
    if state == State.CLAIMED:
        return status
    event = {
        State.COMPLETED: EventType.COMPLETED,
        State.FAILED: EventType.FAILED,
        State.ABANDONED: EventType.ABANDONED,
    }[State(state)]
    if event == EventType.ABANDONED:
        plan = decisions.abandon(status, at(2), "job-1", claim.token, "dead", OPERATOR, None)
    else:
        data = {"error": "boom"} if event == EventType.FAILED else {"result": None}
        plan = decisions.as_holder(status, at(2), claim, event, data, None)
    return apply(status, plan, at(2))


def _operator(status: JobStatus, event: str) -> decisions.Plan:
    return decisions.operate(status, at(1), "job-1", event, OPERATOR, {"reason": None})


# -- legal and illegal moves --------------------------------------------------------------


@pytest.mark.parametrize("state", [s.value for s in State])
@pytest.mark.parametrize("event", [e.value for e in EventType if e != EventType.ENQUEUED])
def test_check_move_follows_the_lifecycle_table(state: str, event: str) -> None:
    status = in_state(state)
    assert status.state == state
    if (state, event) in MOVES:
        decisions.check_move(status, event)
    else:
        with pytest.raises(InvalidTransition) as raised:
            decisions.check_move(status, event)
        assert str(raised.value) == (
            f"job 'job-1': cannot apply {event!r} to a job in state {state!r}"
        )


@pytest.mark.parametrize(
    ("state", "event", "legal"),
    [
        (State.FAILED, EventType.REQUEUED, True),
        (State.ABANDONED, EventType.REQUEUED, True),
        (State.ENQUEUED, EventType.CANCELLED, True),
        (State.COMPLETED, EventType.REQUEUED, False),
        (State.CLAIMED, EventType.CANCELLED, False),
        (State.CANCELLED, EventType.CANCELLED, False),
    ],
)
def test_operator_moves(state: str, event: str, legal: bool) -> None:
    status = in_state(state)
    if legal:
        plan = _operator(status, event)
        assert (plan.type, plan.process, plan.data) == (event, OPERATOR, {"reason": None})
        after = apply(status, plan, at(5))
        assert after.state == MOVES[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            _operator(status, event)


def test_claim_of_a_claimed_job_says_who_holds_it_and_for_how_long() -> None:
    status, claim = claimed()
    with pytest.raises(AlreadyClaimed) as raised:
        decisions.claim(status, at(31), "job-1", OTHER)
    assert (raised.value.holder, raised.value.token) == (WORKER, claim.token)
    assert raised.value.held_for == pytest.approx(30.0)


def test_claim_of_a_finished_job_is_an_invalid_transition() -> None:
    with pytest.raises(InvalidTransition):
        decisions.claim(in_state(State.COMPLETED), at(9), "job-1", OTHER)


def test_claim_counts_attempts() -> None:
    plan = decisions.claim(in_state(State.ENQUEUED), at(1), "job-1", WORKER)
    assert (plan.type, plan.process, plan.data) == (EventType.CLAIMED, WORKER, {"attempt": 1})


@pytest.mark.parametrize(
    "decide",
    [
        lambda: decisions.claim(None, T0, "ghost", WORKER),
        lambda: decisions.skip_delivery(None, T0, "ghost", WORKER, None, ""),
        lambda: decisions.as_holder(None, T0, Claim("ghost", 2, 1, WORKER), "completed", {}, None),
        lambda: decisions.abandon(None, T0, "ghost", 2, "r", None, None),
        lambda: decisions.operate(None, T0, "ghost", "cancelled", None, {"reason": None}),
    ],
)
def test_every_command_on_an_unknown_job_is_unknown_job(decide: Any) -> None:
    with pytest.raises(UnknownJob, match="job 'ghost' does not exist"):
        decide()


def test_enqueue_of_an_existing_id_is_a_duplicate() -> None:
    with pytest.raises(DuplicateJob, match="job 'job-1' already exists"):
        decisions.enqueue(enqueued(), at(1), "job-1", None, {"queue": "q", "data": 1})


# -- fencing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_offset", "process"), [(-1, WORKER), (1, WORKER), (0, OTHER)], ids=str
)
def test_a_stale_holder_is_recorded_as_rejected_then_refused(
    token_offset: int, process: str
) -> None:
    status, claim = claimed()
    stale = Claim("job-1", claim.token + token_offset, claim.attempt, process)
    plan = decisions.as_holder(status, at(5), stale, EventType.COMPLETED, {"result": 1}, None)
    assert (plan.type, plan.process, plan.then) == (EventType.REJECTED, process, None)
    assert plan.data == {
        "attempted": "completed",
        "token": stale.token,
        "current_token": claim.token,
        "holder": WORKER,
        "state": "claimed",
    }
    assert isinstance(plan.refusal, StaleClaim)
    assert str(plan.refusal) == (
        f"job 'job-1': 'completed' by {process} refused: token {stale.token} is stale "
        f"(job is 'claimed', current claim token is {claim.token})"
    )
    after = apply(status, plan, at(5))
    assert (after.state, after.claim_token, after.version) == (
        "claimed",
        claim.token,
        status.version + 1,
    )


def test_a_holder_of_an_ended_claim_is_told_no_claim_is_current() -> None:
    status, claim = claimed()
    done = apply(status, decisions.as_holder(status, at(2), claim, "completed", {}, None), at(2))
    plan = decisions.as_holder(done, at(3), claim, EventType.FAILED, {"error": "late"}, None)
    assert plan.type == EventType.REJECTED
    assert "(job is 'completed', no claim is current)" in str(plan.refusal)


def test_the_current_holder_appends_its_event() -> None:
    status, claim = claimed()
    data = {"result": {"rows": 3}}
    plan = decisions.as_holder(status, at(5), claim, EventType.COMPLETED, data, None)
    assert (plan.type, plan.process, plan.data, plan.refusal) == (
        EventType.COMPLETED,
        WORKER,
        data,
        None,
    )
    assert plan.data is not data  # a copy: a retry never shares the caller's dict
    after = apply(status, plan, at(5))
    assert (after.state, after.claimed_by, after.claim_token) == ("completed", None, None)


def test_abandon_of_a_claim_that_ended_is_stale() -> None:
    status, claim = claimed()
    with pytest.raises(StaleClaim) as raised:
        decisions.abandon(status, at(5), "job-1", claim.token - 1, "dead", OPERATOR, None)
    assert (raised.value.event, raised.value.current_token) == ("abandoned", claim.token)


# -- throttled heartbeats -----------------------------------------------------------------


def heartbeat(
    status: JobStatus, claim: Claim, now: datetime, throttle: timedelta | None = INTERVAL
) -> decisions.Plan:
    return decisions.as_holder(status, now, claim, EventType.HEARTBEAT, {"progress": 1}, throttle)


def test_heartbeats_inside_the_interval_are_checked_but_not_written() -> None:
    status, claim = claimed()  # claimed at 1 s
    assert heartbeat(status, claim, at(10.9)) is decisions.NOTHING
    assert decisions.sealed(status, decisions.NOTHING, "job-1", at(10.9)) == []
    plan = heartbeat(status, claim, at(11))
    assert (plan.type, plan.data) == (EventType.HEARTBEAT, {"progress": 1})
    beaten = apply(status, plan, at(11))
    assert beaten.heartbeat_at == at(11)
    assert heartbeat(beaten, claim, at(20.9)) is decisions.NOTHING  # from the last heartbeat
    assert heartbeat(beaten, claim, at(21)).type == EventType.HEARTBEAT


def test_a_throttled_stale_heartbeat_is_still_refused() -> None:
    status, claim = claimed()
    stale = Claim("job-1", claim.token + 1, claim.attempt, WORKER)
    assert heartbeat(status, stale, at(2)).type == EventType.REJECTED


@pytest.mark.parametrize("throttle", [None, timedelta(0)])
def test_without_an_interval_every_heartbeat_is_written(throttle: timedelta | None) -> None:
    status, claim = claimed()
    assert heartbeat(status, claim, at(1), throttle).type == EventType.HEARTBEAT


# -- sealing ------------------------------------------------------------------------------


def test_sealed_events_chain_from_genesis_and_fold_like_a_replay() -> None:
    events: list[Event] = []
    status: JobStatus | None = None
    plans = [
        lambda s: decisions.enqueue(s, T0, "job-1", OPERATOR, {"queue": "q", "data": [1]}),
        lambda s: decisions.claim(s, at(1), "job-1", WORKER),
        lambda s: decisions.as_holder(
            s, at(2), Claim("job-1", 2, 1, WORKER), "heartbeat", {"progress": None}, None
        ),
        lambda s: decisions.as_holder(
            s, at(3), Claim("job-1", 2, 1, WORKER), "completed", {"result": "ok"}, None
        ),
    ]
    for version, decide in enumerate(plans, start=1):
        now = at(version - 1)
        ((event, after),) = decisions.sealed(status, decide(status), "job-1", now)
        assert event.version == version
        assert event.prev_hash == (events[-1].hash if events else GENESIS)
        assert event.hash == event_hash(
            event.prev_hash, "job-1", version, event.type, event.process, event.data, now
        )
        check_link(status, event)
        assert (after.version, after.last_hash, after.updated_at) == (version, event.hash, now)
        events.append(event)
        status = after
    assert [e.type for e in events] == ["enqueued", "claimed", "heartbeat", "completed"]
    assert fold_all(events) == status


def test_recorded_at_never_runs_backwards() -> None:
    status, claim = claimed()  # updated at 1 s
    earlier = at(0.5)  # the database clock stepped back
    ((event, after),) = decisions.sealed(
        status, decisions.as_holder(status, earlier, claim, "completed", {}, None), "job-1", earlier
    )
    assert event.recorded_at == status.updated_at == after.finished_at


def test_sealing_is_deterministic() -> None:
    status, claim = claimed()
    plan = decisions.as_holder(status, at(4), claim, "failed", {"error": "x"}, None)
    assert decisions.sealed(status, plan, "job-1", at(4)) == decisions.sealed(
        status, plan, "job-1", at(4)
    )


# -- abandon with a recovery policy -------------------------------------------------------


def test_abandon_with_a_policy_that_retries_appends_abandoned_then_requeued() -> None:
    status, claim = claimed(queue="mail")
    policy = RecoveryPolicy(max_attempts=2)
    plan = decisions.abandon(status, at(9), "job-1", claim.token, "holder died", OPERATOR, policy)
    steps = decisions.sealed(status, plan, "job-1", at(9))
    (abandoned, after_abandon), (requeued, after_requeue) = steps
    assert (abandoned.type, abandoned.process, abandoned.data) == (
        "abandoned",
        OPERATOR,
        {"token": claim.token, "holder": WORKER, "reason": "holder died"},
    )
    assert (requeued.type, requeued.process, requeued.data) == (
        "requeued",
        OPERATOR,
        {"reason": "recovery: attempt 1 of 2 abandoned"},
    )
    assert requeued.prev_hash == abandoned.hash
    assert (abandoned.version, requeued.version) == (status.version + 1, status.version + 2)
    assert after_abandon.state == "abandoned"
    assert after_abandon.last_error == "abandoned: holder died"
    assert (after_requeue.state, after_requeue.attempt) == ("enqueued", 1)


def test_abandon_on_the_last_attempt_leaves_the_job_for_an_operator() -> None:
    status, claim = claimed(queue="mail")
    policy = RecoveryPolicy(max_attempts=3, max_attempts_by_queue={"mail": 1})
    plan = decisions.abandon(status, at(9), "job-1", claim.token, "dead", None, policy)
    assert plan.then is None
    ((event, after),) = decisions.sealed(status, plan, "job-1", at(9))
    assert (event.type, after.state) == ("abandoned", "abandoned")


def test_abandon_without_a_policy_only_abandons() -> None:
    status, claim = claimed()
    plan = decisions.abandon(status, at(9), "job-1", claim.token, "dead", None, None)
    assert plan.then is None
    assert len(decisions.sealed(status, plan, "job-1", at(9))) == 1


# -- duplicate deliveries -----------------------------------------------------------------


def skip(status: JobStatus, holder_token: int | None = None, why: str = "") -> decisions.Plan:
    return decisions.skip_delivery(status, at(20), "job-1", OTHER, holder_token, why)


@pytest.mark.parametrize("state", [State.COMPLETED, State.CANCELLED])
def test_a_delivery_of_a_finished_job_is_skipped(state: str) -> None:
    status = in_state(state)
    plan = skip(status, holder_token=7, why="ignored for a finished job")
    assert (plan.type, plan.process) == (EventType.REJECTED, OTHER)
    assert plan.data == {
        "attempted": "claimed",
        "reason": f"duplicate delivery: job is {state}",
        "holder": None,
        "current_token": None,
        "state": state,
    }
    assert plan.refusal is None
    assert apply(status, plan, at(20)).state == state


def test_a_delivery_of_a_job_held_by_a_live_holder_is_skipped_with_the_reason_given() -> None:
    status, claim = claimed()
    plan = skip(status, claim.token, why=f"claimed by live process {WORKER}")
    assert plan.data["reason"] == f"duplicate delivery: claimed by live process {WORKER}"
    assert (plan.data["holder"], plan.data["current_token"]) == (WORKER, claim.token)
    assert skip(status, claim.token).data["reason"] == (
        f"duplicate delivery: job is claimed by {WORKER}"
    )


@pytest.mark.parametrize("state", [State.ENQUEUED, State.FAILED, State.ABANDONED, State.CLAIMED])
def test_a_delivery_that_may_claim_again_writes_nothing(state: str) -> None:
    status = in_state(state)
    other_token = (status.claim_token or 0) + 5
    assert skip(status, other_token) is decisions.NOTHING
    assert skip(status) is decisions.NOTHING


# -- the write that skips the read --------------------------------------------------------


def test_unread_step_is_the_plain_append_only() -> None:
    status, claim = claimed()
    step = decisions.unread_step(status, at(5), claim, "completed", {"result": 1}, None)
    assert step is not None
    assert (
        step
        == decisions.sealed(
            status,
            decisions.as_holder(status, at(5), claim, "completed", {"result": 1}, None),
            "job-1",
            at(5),
        )[0]
    )
    stale = Claim("job-1", claim.token + 1, claim.attempt, WORKER)
    assert decisions.unread_step(status, at(5), stale, "completed", {}, None) is None
    assert decisions.unread_step(status, at(5), claim, "heartbeat", {}, INTERVAL) is None
    assert decisions.unread_step(status, at(5), claim, "requeued", {}, None) is None


# -- batches ------------------------------------------------------------------------------


def test_new_jobs_are_checked_and_repeats_refused() -> None:
    assert decisions.new_jobs(["a", ("b", {"x": 1})]) == [("a", None), ("b", {"x": 1})]
    with pytest.raises(DuplicateJob) as raised:
        decisions.new_jobs(["b", "a", ("b", 1), "a", "c"])
    assert raised.value.job_ids == ["a", "b"]
    with pytest.raises(InvalidJobId):
        decisions.new_jobs([("a", 1, 2)])  # type: ignore[list-item]


def test_not_yet_enqueued_skips_exact_repeats_only() -> None:
    batch = [("a", 1), ("b", {"k": [1]}), ("c", None)]
    stored = {"b": {"queue": "q", "data": {"k": [1]}}}
    assert decisions.not_yet_enqueued(batch, "q", {}) is batch
    assert decisions.not_yet_enqueued(batch, "q", stored) == [("a", 1), ("c", None)]
    with pytest.raises(DuplicateJob) as raised:
        decisions.not_yet_enqueued(batch, "other", stored)
    assert raised.value.job_ids == ["b"]


def test_first_step_is_the_enqueued_event_from_genesis() -> None:
    event, status = decisions.first_step("job-1", "q", {"n": 1}, OPERATOR, T0)
    assert (event.version, event.prev_hash, event.type) == (1, GENESIS, "enqueued")
    assert event.data == {"queue": "q", "data": {"n": 1}}
    assert (status.state, status.queue, status.last_hash) == ("enqueued", "q", event.hash)
