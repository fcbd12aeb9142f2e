"""The status projection: how one event changes a job's current status.

:func:`fold` is the single definition used by every append (to compute the new
projection row in the same transaction), by ``rebuild`` and by point-in-time
replay, which is why a rebuilt projection equals the live one row for row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .errors import CorruptHistory
from .lifecycle import MOVES, NEW, EventType
from .records import Event, JobStatus

_Changes = Callable[[JobStatus, Event], dict[str, Any]]
_ENDS_CLAIM = {"claimed_by": None, "claim_token": None}


def _claimed(status: JobStatus, event: Event) -> dict[str, Any]:
    return {
        "attempt": status.attempt + 1,
        "claimed_by": event.process,
        "claim_token": event.version,  # a claim's fencing token is its event's version
        "claimed_at": event.recorded_at,
        "heartbeat_at": None,
        "finished_at": None,
    }


def _heartbeat(status: JobStatus, event: Event) -> dict[str, Any]:
    return {"heartbeat_at": event.recorded_at}


def _finished(status: JobStatus, event: Event) -> dict[str, Any]:
    return {**_ENDS_CLAIM, "finished_at": event.recorded_at}


def _failed(status: JobStatus, event: Event) -> dict[str, Any]:
    return {**_finished(status, event), "last_error": _field(event, "error")}


def _abandoned(status: JobStatus, event: Event) -> dict[str, Any]:
    reason = _field(event, "reason")
    return {**_finished(status, event), "last_error": f"abandoned: {reason}"}


def _released(status: JobStatus, event: Event) -> dict[str, Any]:
    return dict(_ENDS_CLAIM)


def _requeued(status: JobStatus, event: Event) -> dict[str, Any]:
    return {"finished_at": None}


def _cancelled(status: JobStatus, event: Event) -> dict[str, Any]:
    return {"finished_at": event.recorded_at}


def _unchanged(status: JobStatus, event: Event) -> dict[str, Any]:
    return {}


_CHANGES: dict[str, _Changes] = {
    EventType.CLAIMED.value: _claimed,
    EventType.HEARTBEAT.value: _heartbeat,
    EventType.COMPLETED.value: _finished,
    EventType.FAILED.value: _failed,
    EventType.RELEASED.value: _released,
    EventType.ABANDONED.value: _abandoned,
    EventType.REQUEUED.value: _requeued,
    EventType.CANCELLED.value: _cancelled,
    EventType.REJECTED.value: _unchanged,
}


def _field(event: Event, name: str) -> Any:
    if not isinstance(event.data, dict) or name not in event.data:
        raise CorruptHistory(
            f"job {event.job_id!r} version {event.version}: {event.type!r} event has no {name!r}"
        )
    return event.data[name]


def _start(event: Event) -> JobStatus:
    queue = _field(event, "queue")
    return JobStatus(
        job_id=event.job_id,
        queue=queue,
        state=EventType.ENQUEUED.value,
        version=event.version,
        attempt=0,
        claimed_by=None,
        claim_token=None,
        enqueued_at=event.recorded_at,
        claimed_at=None,
        heartbeat_at=None,
        finished_at=None,
        updated_at=event.recorded_at,
        last_error=None,
        last_hash=event.hash,
    )


def check_link(status: JobStatus | None, event: Event) -> str:
    """The state ``event`` moves the job to; ``CorruptHistory`` if it cannot follow ``status``."""
    before = status.state if status is not None else NEW
    expected_version = status.version + 1 if status is not None else 1
    if event.version != expected_version:
        raise CorruptHistory(
            f"job {event.job_id!r}: expected version {expected_version}, found {event.version}"
        )
    after = MOVES.get((before, event.type))
    if after is None:
        raise CorruptHistory(
            f"job {event.job_id!r} version {event.version}: "
            f"{event.type!r} is not a legal move from {before!r}"
        )
    if status is not None and event.prev_hash != status.last_hash:
        raise CorruptHistory(
            f"job {event.job_id!r} version {event.version}: "
            "prev_hash does not match the previous event's hash"
        )
    return after


def fold(status: JobStatus | None, event: Event) -> JobStatus:
    """The status after ``event``; ``CorruptHistory`` for an event that cannot follow."""
    after = check_link(status, event)
    if status is None:
        return _start(event)
    changes = _CHANGES[event.type](status, event)
    return replace(
        status,
        state=after,
        version=event.version,
        updated_at=event.recorded_at,
        last_hash=event.hash,
        **changes,
    )


def fold_all(events: Iterable[Event]) -> JobStatus | None:
    """Fold one job's events, oldest first."""
    status: JobStatus | None = None
    for event in events:
        status = fold(status, event)
    return status
