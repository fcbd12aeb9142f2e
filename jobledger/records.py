"""The values the ledger hands out: events, job statuses and claims."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One appended, immutable step of a job's history."""

    position: int
    job_id: str
    version: int
    type: str
    process: str | None
    data: Any
    recorded_at: datetime
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job as of its latest event: one row of the status projection.

    ``claimed_by`` and ``claim_token`` are set only while the job is claimed.
    ``attempt`` counts claims. ``last_hash`` is the hash of the latest event,
    which the next event chains from.
    """

    job_id: str
    queue: str
    state: str
    version: int
    attempt: int
    claimed_by: str | None
    claim_token: int | None
    enqueued_at: datetime
    claimed_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    last_error: str | None
    last_hash: str


@dataclass(frozen=True, slots=True)
class Claim:
    """Proof that ``process`` holds ``job_id``; ``token`` fences out stale holders."""

    job_id: str
    token: int
    attempt: int
    process: str
