"""A job's row, handed from the process that enqueued it to the one that claims it.

A job system carries each message from the producer to a worker. When the message
also carries the job's row as the producer's ``enqueue`` wrote it, the worker's
claim can go out without reading the job first (:meth:`Ledger.claim
<jobledger.ledger.Ledger.claim>` with ``seen=``): one round trip instead of two.

The row is a hint, never trusted. The claim is guarded by every column of it and
by the database clock, so a stale row (the job moved on since) or a forged one
writes nothing and costs one read; the claim then decides on the row it read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone
from typing import Any

from .records import JobStatus

#: The name of the message header (Celery) or job meta key (RQ) that carries the row.
HEADER = "jobledger_row"
#: The layout's version, first in every packed row.
FORMAT = 1
#: A packed row is a few hundred characters; anything longer is not one.
MAX_LENGTH = 4096

log = logging.getLogger("jobledger.handoff")

_FIELDS = tuple(field.name for field in dataclasses.fields(JobStatus))
_TEXT = frozenset({"job_id", "queue", "state", "last_hash"})
_MAYBE_TEXT = frozenset({"claimed_by", "last_error"})
_NUMBER = frozenset({"version", "attempt"})
_MAYBE_NUMBER = frozenset({"claim_token"})
_MOMENT = frozenset({"enqueued_at", "updated_at"})
_MAYBE_MOMENT = frozenset({"claimed_at", "heartbeat_at", "finished_at"})


def pack(status: JobStatus) -> str:
    """``status`` as compact JSON text, for a message header."""
    values = [_packed(getattr(status, name)) for name in _FIELDS]
    return json.dumps([FORMAT, *values], separators=(",", ":"), ensure_ascii=True)


def unpack(text: object) -> JobStatus:
    """The row :func:`pack` made; ``ValueError`` for anything else."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise ValueError("not a packed job row")
    try:
        layout, *values = json.loads(text)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError("not a packed job row") from exc
    if layout != FORMAT or len(values) != len(_FIELDS):
        raise ValueError(f"not a packed job row of format {FORMAT}")
    return JobStatus(*(_unpacked(name, value) for name, value in zip(_FIELDS, values, strict=True)))


def seen_in(text: object, job_id: str) -> JobStatus | None:
    """The row a message carried for ``job_id``, or ``None`` when it carried none.

    A malformed row, or one of another job, is logged and ignored: it only costs
    the claim a read.
    """
    if text is None:
        return None
    try:
        seen = unpack(text)
    except ValueError as exc:
        log.warning("job %r: ignoring the ledger row in its message: %s", job_id, exc)
        return None
    if seen.job_id != job_id:
        log.warning("job %r: ignoring the ledger row of job %r in its message", job_id, seen.job_id)
        return None
    return seen


def _packed(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return value


def _unpacked(name: str, value: Any) -> Any:
    if value is None and name in _MAYBE_TEXT | _MAYBE_NUMBER | _MAYBE_MOMENT:
        return None
    if name in _TEXT | _MAYBE_TEXT:
        if isinstance(value, str):
            return value
    elif name in _NUMBER | _MAYBE_NUMBER:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif name in _MOMENT | _MAYBE_MOMENT and isinstance(value, str):
        return _moment(name, value)
    raise ValueError(f"{name} has the wrong type")


def _moment(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{name} is not a timestamp") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    return moment.astimezone(timezone.utc)
