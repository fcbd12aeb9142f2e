"""The status projection: how one event changes a job's current status.

:func:`advance` is the single definition of the projection. Every append uses
it (through :func:`fold`) to compute the new projection row in the same
transaction, and ``rebuild``, ``verify`` and point-in-time replay use it to
fold stored histories, which is why a rebuilt projection equals the live one
row for row.

Folding works on a mutable :class:`Draft`: a long history costs one object,
not one frozen copy per event (see benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from .errors import CorruptHistory
from .lifecycle import MOVES, NEW, EventType
from .records import JobStatus, status_columns


class EventLike(Protocol):
    """What folding reads from an event: an :class:`~jobledger.records.Event` or a stored row."""

    @property
    def job_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def process(self) -> str | None: ...
    @property
    def data(self) -> Any: ...
    @property
    def recorded_at(self) -> datetime: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


class Draft:
    """A job's status while events are folded into it; :meth:`freeze` makes the JobStatus."""

    __slots__ = (
        "attempt",
        "claim_token",
        "claimed_at",
        "claimed_by",
        "enqueued_at",
        "finished_at",
        "heartbeat_at",
        "job_id",
        "last_error",
        "last_hash",
        "queue",
        "state",
        "updated_at",
        "version",
    )

    def __init__(self, status: JobStatus) -> None:
        # One C call reads the row in column order (JobStatus's fields are the columns).
        (
            self.job_id,
            self.queue,
            self.state,
            self.version,
            self.attempt,
            self.claimed_by,
            self.claim_token,
            self.enqueued_at,
            self.claimed_at,
            self.heartbeat_at,
            self.finished_at,
            self.updated_at,
            self.last_error,
            self.last_hash,
        ) = status_columns(status)

    def freeze(self) -> JobStatus:
        return JobStatus(*status_columns(self))


_Rule = Callable[[Draft, EventLike], None]


def _claimed(draft: Draft, event: EventLike) -> None:
    draft.attempt += 1
    draft.claimed_by = event.process
    draft.claim_token = event.version  # a claim's fencing token is its event's version
    draft.claimed_at = event.recorded_at
    draft.heartbeat_at = None
    draft.finished_at = None


def _heartbeat(draft: Draft, event: EventLike) -> None:
    draft.heartbeat_at = event.recorded_at


def _finished(draft: Draft, event: EventLike) -> None:
    draft.claimed_by = None
    draft.claim_token = None
    draft.finished_at = event.recorded_at


def _failed(draft: Draft, event: EventLike) -> None:
    error = _field(event, "error")  # before any change: a corrupt event leaves the draft alone
    _finished(draft, event)
    draft.last_error = error


def _abandoned(draft: Draft, event: EventLike) -> None:
    reason = _field(event, "reason")
    _finished(draft, event)
    draft.last_error = f"abandoned: {reason}"


def _released(draft: Draft, event: EventLike) -> None:
    draft.claimed_by = None
    draft.claim_token = None


def _requeued(draft: Draft, event: EventLike) -> None:
    draft.finished_at = None


def _cancelled(draft: Draft, event: EventLike) -> None:
    draft.finished_at = event.recorded_at


def _unchanged(draft: Draft, event: EventLike) -> None:
    pass


_RULES: dict[str, _Rule] = {
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


def _field(event: EventLike, name: str) -> Any:
    if not isinstance(event.data, dict) or name not in event.data:
        raise CorruptHistory(event.job_id, event.version, f"{event.type!r} event has no {name!r}")
    return event.data[name]


def _start(event: EventLike, state: str) -> Draft:
    draft = Draft.__new__(Draft)
    draft.job_id = event.job_id
    draft.queue = _field(event, "queue")
    draft.state = state
    draft.version = event.version
    draft.attempt = 0
    draft.claimed_by = None
    draft.claim_token = None
    draft.enqueued_at = event.recorded_at
    draft.claimed_at = None
    draft.heartbeat_at = None
    draft.finished_at = None
    draft.updated_at = event.recorded_at
    draft.last_error = None
    draft.last_hash = event.hash
    return draft


def check_link(status: JobStatus | Draft | None, event: EventLike) -> str:
    """The state ``event`` moves the job to; ``CorruptHistory`` if it cannot follow ``status``."""
    before = status.state if status is not None else NEW
    expected_version = status.version + 1 if status is not None else 1
    if event.version != expected_version:
        raise CorruptHistory(
            event.job_id, None, f"expected version {expected_version}, found {event.version}"
        )
    after = MOVES.get((before, event.type))
    if after is None:
        raise CorruptHistory(
            event.job_id, event.version, f"{event.type!r} is not a legal move from {before!r}"
        )
    if status is not None and event.prev_hash != status.last_hash:
        raise CorruptHistory(
            event.job_id, event.version, "prev_hash does not match the previous event's hash"
        )
    return after


def advance(draft: Draft | None, event: EventLike) -> Draft:
    """Fold ``event`` into ``draft`` (changed in place; a new one for a first event).

    ``CorruptHistory`` for an event that cannot follow; ``draft`` is then unchanged.
    """
    after = check_link(draft, event)
    if draft is None:
        return _start(event, after)
    _RULES[event.type](draft, event)
    draft.state = after
    draft.version = event.version
    draft.updated_at = event.recorded_at
    draft.last_hash = event.hash
    return draft


def fold(status: JobStatus | None, event: EventLike) -> JobStatus:
    """The status after ``event``; ``CorruptHistory`` for an event that cannot follow."""
    return advance(Draft(status) if status is not None else None, event).freeze()


def fold_all(events: Iterable[EventLike]) -> JobStatus | None:
    """Fold one job's events, oldest first."""
    draft: Draft | None = None
    for event in events:
        draft = advance(draft, event)
    return draft.freeze() if draft is not None else None
