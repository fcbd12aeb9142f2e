"""Plain reads of the projection and the events, through SQLAlchemy."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, select

from ..database import translated_errors
from ..lifecycle import State
from ..records import Event, JobStatus
from ..schema import events, jobs
from . import backend_for
from .rows import event_from_row, status_from_row


class HeldClaim(NamedTuple):
    """A claimed job as the recovery sweep reads it, with the database clock's ``now``."""

    job_id: str
    queue: str
    claimed_by: str
    claim_token: int
    attempt: int
    claimed_at: datetime
    seen: datetime  # the last heartbeat, or the claim if there was none yet
    now: datetime


class Reads:
    """Reads of one Engine's ledger; each runs on a connection of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.backend = backend_for(engine)

    def status(self, job_id: str) -> JobStatus | None:
        query = select(jobs).where(jobs.c.job_id == job_id)
        row = self._one_or_none(query)
        return status_from_row(row) if row is not None else None

    def history(self, job_id: str) -> list[Event]:
        query = select(events).where(events.c.job_id == job_id).order_by(events.c.version)
        return [event_from_row(row) for row in self._all(query)]

    def statuses(
        self,
        state: str | None = None,
        queue: str | None = None,
        claimed_by: str | None = None,
        batch_size: int = 1000,
    ) -> Iterator[JobStatus]:
        """Projection rows matching the filters, in job-id order, fetched in pages."""
        query = select(jobs).order_by(jobs.c.job_id).limit(batch_size)
        for column, value in (("state", state), ("queue", queue), ("claimed_by", claimed_by)):
            if value is not None:
                query = query.where(jobs.c[column] == value)
        after: str | None = None
        while True:
            rows = self._all(query if after is None else query.where(jobs.c.job_id > after))
            yield from (status_from_row(row) for row in rows)
            if len(rows) < batch_size:
                return
            after = rows[-1].job_id

    def existing(self, job_ids: Sequence[str]) -> list[str]:
        query = select(jobs.c.job_id).where(jobs.c.job_id.in_(job_ids))
        return sorted(row.job_id for row in self._all(query))

    def first_payloads(self, job_ids: Sequence[str]) -> dict[str, Any]:
        """The data of the first (``enqueued``) event of each of ``job_ids`` that exists."""
        query = select(events.c.job_id, events.c.data).where(
            events.c.job_id.in_(job_ids), events.c.version == 1
        )
        return {row.job_id: row.data for row in self._all(query)}

    def claim_holders(self) -> set[str]:
        """Every process that holds a claim now."""
        # claimed_by is set exactly while a job is claimed (the fold guarantees it, verify
        # checks it), so this reads only the partial holder index, never the table.
        query = (
            select(jobs.c.claimed_by)
            .where(jobs.c.claimed_by.is_not(None))
            .group_by(jobs.c.claimed_by)
        )
        return {row.claimed_by for row in self._all(query)}

    def claims_per_holder(self) -> dict[str, int]:
        """How many jobs each holder has claimed, from the partial holder index alone."""
        query = (
            select(jobs.c.claimed_by, func.count())
            .where(jobs.c.claimed_by.is_not(None))
            .group_by(jobs.c.claimed_by)
        )
        return dict(self._all(query))

    def claims_held_by(self, holders: Collection[str]) -> list[HeldClaim]:
        """The claimed jobs of ``holders`` (one IN list: the caller bounds it)."""
        query = select(
            jobs.c.job_id,
            jobs.c.queue,
            jobs.c.claimed_by,
            jobs.c.claim_token,
            jobs.c.attempt,
            jobs.c.claimed_at,
            func.coalesce(jobs.c.heartbeat_at, jobs.c.claimed_at).label("seen"),
            self.backend.clock().label("now"),
        ).where(jobs.c.state == State.CLAIMED.value, jobs.c.claimed_by.in_(holders))
        return [HeldClaim._make(row) for row in self._all(query)]

    def held_job_ids(self, holders: Collection[str]) -> dict[str, list[str]]:
        """The ids of the jobs each of ``holders`` has claimed, in id order (one IN list: the
        caller bounds it). Ids alone: a million claims are not a million statuses."""
        query = select(jobs.c.claimed_by, jobs.c.job_id).where(
            jobs.c.state == State.CLAIMED.value, jobs.c.claimed_by.in_(holders)
        )
        held: dict[str, list[str]] = {}
        for holder, job_id in self._all(query):
            held.setdefault(holder, []).append(job_id)
        # Sorted here, by code point: the database's collation may order text otherwise.
        return {holder: sorted(job_ids) for holder, job_ids in held.items()}

    def events_after(self, position: int) -> list[Event]:
        """Events appended after ``position``, in position order."""
        query = select(events).where(events.c.position > position).order_by(events.c.position)
        return [event_from_row(row) for row in self._all(query)]

    def last_position(self) -> int:
        """The position of the latest event (0 if there is none)."""
        return int(self._scalar(select(func.coalesce(func.max(events.c.position), 0))))

    def _all(self, query: Any) -> list[Any]:
        with translated_errors(self.engine), self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def _one_or_none(self, query: Any) -> Any:
        with translated_errors(self.engine), self.engine.connect() as conn:
            return conn.execute(query).one_or_none()

    def _scalar(self, query: Any) -> Any:
        with translated_errors(self.engine), self.engine.connect() as conn:
            return conn.execute(query).scalar_one()
