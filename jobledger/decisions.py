"""What a command decides, given the job as loaded: pure functions, no I/O.

A command is load -> decide -> write. This module is the middle step, over plain
values (the loaded :class:`JobStatus` or ``None``, the database clock's ``now``,
the command's arguments), and is shared by every Ledger whatever its way of
talking to the database. A decider validates the move against the lifecycle
table, fences a holder's write with its claim token and returns a :class:`Plan`,
or raises the jobledger error the caller sees; :func:`sealed` then turns the
plan into the events to append, each chained to the previous one (version + 1,
its hash, ``recorded_at`` never before the job's last event) and folded into
the status the projection row takes. Nothing here has an effect to undo, so a
writer that lost a race simply decides again on the winner's row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import names
from .chain import GENESIS, event_hash
from .encoding import canonical_json, normalize_payload
from .errors import (
    AlreadyClaimed,
    DuplicateJob,
    InvalidJobId,
    InvalidTransition,
    LedgerError,
    StaleClaim,
    UnknownJob,
)
from .lifecycle import MOVES, TERMINAL_STATES, EventType, State
from .policy import RecoveryPolicy
from .projection import fold
from .records import Claim, Event, JobStatus, quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class Plan:
    """What a command decided: the event to append (``type=None``: nothing)."""

    type: str | None
    process: str | None = None
    data: Any = None
    refusal: LedgerError | None = None  # raised after the event is stored
    then: Plan | None = None  # a next event, appended in the same transaction


#: An EventType as the plain ``str`` it is (``str()`` of an enum member runs its Python
#: ``__str__``, and hashing one its Python ``__hash__``; this is one C call).
_plain: Callable[[str], str] = str.__str__

#: The plan to write nothing (a throttled heartbeat, a delivery that may claim again).
NOTHING = Plan(None)

#: A sealed event and the job's status after it: one guarded write.
Step = tuple[Event, JobStatus]
#: A job for ``enqueue_many``: its id, or its id and data.
JobSpec = str | tuple[str, Any]


# -- deciders: (status as loaded, database now, the command's arguments) -> Plan ----------


def enqueue(
    status: JobStatus | None, now: datetime, job_id: str, process: str | None, payload: Any
) -> Plan:
    """Create the job; ``DuplicateJob`` if the id was ever used."""
    if status is not None:
        raise DuplicateJob([job_id])
    return Plan(EventType.ENQUEUED, process, payload)


def claim(status: JobStatus | None, now: datetime, job_id: str, process: str) -> Plan:
    """Claim for ``process``; ``AlreadyClaimed`` (with how long it is held) if someone holds it."""
    status = known(job_id, status)
    if status.state == State.CLAIMED:
        held_for = (now - (status.claimed_at or now)).total_seconds()
        raise AlreadyClaimed(job_id, status.claimed_by, status.claim_token, held_for)
    check_move(status, EventType.CLAIMED)
    return Plan(EventType.CLAIMED, process, {"attempt": status.attempt + 1})


def skip_delivery(
    status: JobStatus | None,
    now: datetime,
    job_id: str,
    process: str,
    holder_token: int | None,
    why: str,
) -> Plan:
    """A ``rejected`` claim while the job is finished or still held under ``holder_token``;
    :data:`NOTHING` when the delivery should try to claim again."""
    status = known(job_id, status)
    if status.state in TERMINAL_STATES:
        reason = f"job is {status.state}"
    elif holder_token is not None and status.claim_token == holder_token:
        reason = why or f"job is claimed by {status.claimed_by}"
    else:
        return NOTHING
    data = {
        "attempted": str(EventType.CLAIMED),
        "reason": f"duplicate delivery: {reason}",
        "holder": status.claimed_by,
        "current_token": status.claim_token,
        "state": status.state,
    }
    return Plan(EventType.REJECTED, process, data)


def as_holder(
    status: JobStatus | None,
    now: datetime,
    held: Claim,
    event: str,
    data: Mapping[str, Any],
    throttle: timedelta | None,
) -> Plan:
    """``event`` by the holder of ``held``, fenced by its token and process.

    A stale claim is recorded as ``rejected`` and refused with ``StaleClaim``.
    With a ``throttle``, an event within that time of the claim's last
    heartbeat (or of the claim) is checked but not written.
    """
    status = known(held.job_id, status)
    if status.claim_token != held.token or status.claimed_by != held.process:
        return rejection(status, held, event)
    check_move(status, event)
    if throttle is not None and now - (status.heartbeat_at or status.claimed_at or now) < throttle:
        return NOTHING
    return Plan(event, held.process, dict(data))


def abandon(
    status: JobStatus | None,
    now: datetime,
    job_id: str,
    token: int,
    why: str | None,
    process: str | None,
    policy: RecoveryPolicy | None,
) -> Plan:
    """End the claim ``token`` (``StaleClaim`` if it already ended); then ``requeued`` if the
    ``policy`` gives the job another attempt."""
    status = known(job_id, status)
    if status.claim_token != token:
        raise StaleClaim(
            job_id, EventType.ABANDONED, token, status.claim_token, status.state, process
        )
    data = {"token": token, "holder": status.claimed_by, "reason": why}
    then = None
    if policy is not None and policy.requeues(status.queue, status.attempt):
        cap = policy.attempts_for(status.queue)
        retry = f"recovery: attempt {status.attempt} of {cap} abandoned"
        then = Plan(EventType.REQUEUED, process, {"reason": retry})
    return Plan(EventType.ABANDONED, process, data, then=then)


def operate(
    status: JobStatus | None,
    now: datetime,
    job_id: str,
    event: str,
    process: str | None,
    data: Mapping[str, Any],
) -> Plan:
    """An operator's ``event`` (requeue, cancel), if the lifecycle allows it from here."""
    check_move(known(job_id, status), event)
    return Plan(event, process, data)


def rejection(status: JobStatus, held: Claim, event: str) -> Plan:
    """The ``rejected`` event that records a stale holder's ``event``, refused after storing."""
    refusal = StaleClaim(
        held.job_id, event, held.token, status.claim_token, status.state, held.process
    )
    data = {
        "attempted": str(event),
        "token": held.token,
        "current_token": status.claim_token,
        "holder": status.claimed_by,
        "state": status.state,
    }
    return Plan(EventType.REJECTED, held.process, data, refusal)


def known(job_id: str, status: JobStatus | None) -> JobStatus:
    """``status``; ``UnknownJob`` if the job has none."""
    if status is None:
        raise UnknownJob(job_id)
    return status


def check_move(status: JobStatus, event: str) -> None:
    """``InvalidTransition`` unless the lifecycle allows ``event`` from the job's state."""
    if (status.state, _plain(event)) not in MOVES:
        raise InvalidTransition(status.job_id, status.state, str(event))


# -- sealing: a plan becomes the chained events and statuses to write ---------------------


def seal(status: JobStatus | None, plan: Plan, job_id: str, now: datetime) -> Event:
    """The event ``plan`` describes, chained to ``status``; its position is set on insert."""
    assert plan.type is not None
    version = status.version + 1 if status is not None else 1
    prev_hash = status.last_hash if status is not None else GENESIS
    # Never let a job's history run backwards, even if the database clock steps back.
    recorded_at = max(now, status.updated_at) if status is not None else now
    kind = _plain(plan.type)
    digest = event_hash(prev_hash, job_id, version, kind, plan.process, plan.data, recorded_at)
    return Event(-1, job_id, version, kind, plan.process, plan.data, recorded_at, prev_hash, digest)


def sealed(status: JobStatus | None, plan: Plan, job_id: str, now: datetime) -> list[Step]:
    """Each event of ``plan`` and its ``then`` chain, sealed after ``status``, with the status
    it leads to; empty for a plan to write nothing."""
    steps: list[Step] = []
    step: Plan | None = plan if plan.type is not None else None
    while step is not None:
        event = seal(status, step, job_id, now)
        status = fold(status, event)
        steps.append((event, status))
        step = step.then
    return steps


def unread_step(
    known: JobStatus,
    now: datetime,
    held: Claim,
    event: str,
    data: Mapping[str, Any],
    throttle: timedelta | None,
) -> Step | None:
    """:func:`as_holder` decided on ``known``, a row remembered instead of read (see
    :func:`unread`)."""
    return unread(known, now, known.job_id, as_holder, held, event, data, throttle)


def unread(
    known: JobStatus | None, now: datetime, job_id: str, decide: Callable[..., Plan], *args: Any
) -> Step | None:
    """``decide`` on ``known``, a row remembered or handed over instead of read (``None``:
    a new job): the one event to append with the status it leads to, or ``None`` unless
    the decision is that plain (no error, no refusal to record, something to write), and
    the command must read the job and decide on what it finds."""
    try:
        plan = decide(known, now, *args)
    except LedgerError:
        return None
    if plan.type is None or plan.refusal is not None or plan.then is not None:
        return None
    appended = seal(known, plan, job_id, now)
    return appended, fold(known, appended)


def first_step(job_id: str, queue: str, data: Any, process: str | None, now: datetime) -> Step:
    """The ``enqueued`` event that creates ``job_id`` in a batch, with the job's first status."""
    event = seal(
        None, Plan(EventType.ENQUEUED, process, {"queue": queue, "data": data}), job_id, now
    )
    return event, fold(None, event)


def not_yet_enqueued(
    batch: list[tuple[str, Any]], queue: str, stored: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """``batch`` without the jobs whose ``stored`` first payload is exactly this one;
    ``DuplicateJob`` for those stored with another queue or other data."""
    if not stored:
        return batch
    different = sorted(
        job_id
        for job_id, data in batch
        if job_id in stored
        and canonical_json(stored[job_id]) != canonical_json({"queue": queue, "data": data})
    )
    if different:
        raise DuplicateJob(different)
    return [(job_id, data) for job_id, data in batch if job_id not in stored]


def new_jobs(specs: Iterable[JobSpec]) -> list[tuple[str, Any]]:
    """``(id, data)`` of each job for ``enqueue_many``, checked and normalized;
    ``DuplicateJob`` for an id given twice."""
    items = [_new_job(spec) for spec in specs]
    seen: set[str] = set()
    repeated: set[str] = set()
    for job_id, _ in items:
        (repeated if job_id in seen else seen).add(job_id)
    if repeated:
        raise DuplicateJob(sorted(repeated))
    return items


def _new_job(spec: JobSpec) -> tuple[str, Any]:
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise InvalidJobId(f"expected a job id or an (id, data) pair, not {spec!r}")
        job_id, data = spec
        return names.checked_new(job_id), normalize_payload(data, f"data of {job_id!r}")
    return names.checked_new(spec), None
