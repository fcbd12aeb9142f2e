"""What the web view reads: each page's data, gathered from the ledger and liveness.

Every read answers from an index and is bounded (``LIMIT``), so a page costs the
same on a ledger of a thousand jobs as on one of a million: queue figures come
from the ``queue_stats`` catch-up projection (:mod:`jobledger.stats`), never from
counting the jobs table; lists stop at :data:`ROWS`; rejected writes are looked
for among the latest :data:`REJECTED_WINDOW` events only. The pages and ``/api``
share these functions, so both always say the same thing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from ..chain import BAD_HASH, GENESIS, broken_link, event_hash
from ..database import translated_errors
from ..errors import CorruptHistory
from ..ledger import Ledger
from ..lifecycle import EventType, State
from ..liveness import Liveness, ProcessInfo
from ..liveness.base import first_live
from ..names import checked_lookup
from ..records import Event, JobStatus
from ..schema import checkpoints, events, jobs
from ..stats import QueueStat, QueueStats
from ..storage import backend_for
from ..storage.rows import event_from_row, status_from_row
from ..timeline import Step, steps

#: Rows shown in one list of a page (the page says when there are more).
ROWS = 100
#: Holders read per page: the claims in flight, grouped (bounded by the partial holder index).
HOLDERS = 1000
#: Held job ids listed by ``/api/processes``, over all processes (their counts are exact).
HELD_ROWS = 10_000
#: How far back the attention page looks for rejected (zombie) writes, in events.
REJECTED_WINDOW = 100_000
#: Ids a search offers when no job has exactly the id typed.
SEARCH_ROWS = 20


@dataclass(frozen=True)
class Settings:
    """What the pages judge by: the recovery policy's cap and when a holder counts as silent."""

    max_attempts: int = 3
    silent_after: float = 60.0


@dataclass(frozen=True)
class Holder:
    """A process holding claims: alive or not, how long since it refreshed, how many jobs."""

    identity: str
    alive: bool
    held: int
    info: ProcessInfo | None = None
    refreshed_ago: float | None = None  # seconds since its last liveness refresh


@dataclass(frozen=True)
class Overview:
    queues: list[QueueStat]
    states: dict[str, int]
    processes: list[Holder]  # the live processes by identity (the first ones, when capped)
    dead_holders: list[Holder]
    counted_through: int | None  # the event position the queue figures include
    last_position: int
    ttl: float
    live: int = 0  # how many processes are alive, listed or not


@dataclass(frozen=True)
class Attention:
    dead: list[JobStatus]
    silent: list[JobStatus]
    abandoned: list[JobStatus]
    exhausted: list[JobStatus]
    rejected: list[Event]
    dead_holders: list[Holder]
    now: datetime
    settings: Settings
    window: int = REJECTED_WINDOW


@dataclass(frozen=True)
class ChainStatus:
    """Whether a job's stored events still chain: each hash matches, each link holds."""

    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobPage:
    status: JobStatus
    steps: list[Step]
    payload: Any
    chain: ChainStatus
    holder_alive: bool | None  # None while nobody holds it
    fold_error: str | None = None


class Board:
    """The reads of one ledger and one liveness backend, for every page and API route."""

    def __init__(self, ledger: Ledger, liveness: Liveness, settings: Settings | None = None):
        self.ledger = ledger
        self.liveness = liveness
        self.settings = settings or Settings()
        self.engine: Engine = ledger.engine
        self._clock = backend_for(self.engine).clock()

    # -- overview ---------------------------------------------------------------------

    def overview(self, process_rows: int | None = None) -> Overview:
        """Jobs per queue and state, the live processes (with ``process_rows``, only the
        first ones by identity: a page of 25,000 rows helps nobody), and dead holders."""
        queues = QueueStats.read(self.engine)
        states: dict[str, int] = {state.value: 0 for state in State}
        for stat in queues:
            states[stat.state] = states.get(stat.state, 0) + stat.jobs
        holders = self.holders()
        live, count = first_live(self.liveness, process_rows)
        remaining = self.liveness.remaining([p.identity for p in live]) if live else {}
        held = {h.identity: h.held for h in holders}
        processes = [
            Holder(
                p.identity,
                alive=True,
                held=held.get(p.identity, 0),
                info=p,
                refreshed_ago=_refreshed_ago(self.liveness.ttl, remaining.get(p.identity)),
            )
            for p in live
        ]
        return Overview(
            queues=queues,
            states=states,
            processes=processes,
            dead_holders=[h for h in holders if not h.alive],
            counted_through=self._checkpoint(QueueStats.name),
            last_position=self.ledger.last_position(),
            ttl=self.liveness.ttl,
            live=count,
        )

    def holders(self) -> list[Holder]:
        """Every process holding claims (up to :data:`HOLDERS`), with its count and liveness."""
        query = (
            select(jobs.c.claimed_by, func.count().label("held"))
            .where(jobs.c.claimed_by.is_not(None))
            .group_by(jobs.c.claimed_by)
            .order_by(jobs.c.claimed_by)
            .limit(HOLDERS)
        )
        counted = [(row.claimed_by, row.held) for row in self._all(query)]
        alive = self.liveness.alive([identity for identity, _ in counted]) if counted else {}
        return [Holder(identity, alive.get(identity, False), held) for identity, held in counted]

    # -- attention --------------------------------------------------------------------

    def attention(self) -> Attention:
        holders = self.holders()
        dead = [h for h in holders if not h.alive]
        now = self._now()
        return Attention(
            dead=self._claims_of([h.identity for h in dead]),
            silent=self._silent(now, [h.identity for h in holders if h.alive]),
            abandoned=self._jobs(
                jobs.c.state == State.ABANDONED.value,
                jobs.c.attempt < self.settings.max_attempts,
            ),
            exhausted=self._jobs(
                jobs.c.state.in_([State.ABANDONED.value, State.FAILED.value]),
                jobs.c.attempt >= self.settings.max_attempts,
            ),
            rejected=self.rejected(),
            dead_holders=dead,
            now=now,
            settings=self.settings,
        )

    # Both lists below walk the partial holder index in holder order and stop at ROWS:
    # ordering by anything else (job id, last heartbeat) would sort every claim first.

    def _claims_of(self, holders: Sequence[str]) -> list[JobStatus]:
        if not holders:
            return []
        return self._jobs(jobs.c.claimed_by.in_(holders), order=(jobs.c.claimed_by,))

    def _silent(self, now: datetime, alive: Sequence[str]) -> list[JobStatus]:
        """Claims of live holders with no heartbeat (or claim) for ``silent_after`` seconds."""
        if not alive:
            return []
        seen = func.coalesce(jobs.c.heartbeat_at, jobs.c.claimed_at)
        cutoff = now - timedelta(seconds=self.settings.silent_after)
        return self._jobs(jobs.c.claimed_by.in_(alive), seen < cutoff, order=(jobs.c.claimed_by,))

    def rejected(self) -> list[Event]:
        """The latest refused (stale holder) writes among the last REJECTED_WINDOW events."""
        floor = max(0, self.ledger.last_position() - REJECTED_WINDOW)
        query = (
            select(events)
            .where(events.c.position > floor, events.c.type == EventType.REJECTED.value)
            .order_by(events.c.position.desc())
            .limit(ROWS)
        )
        return [event_from_row(row) for row in self._all(query)]

    # -- one job ----------------------------------------------------------------------

    def job(self, job_id: str) -> JobPage:
        """One job's page; ``UnknownJob`` (or ``InvalidJobId``) if there is no such job."""
        status = self.ledger.status(job_id)
        history = self.ledger.history(job_id)
        try:
            timeline, fold_error = steps(history), None
        except CorruptHistory as exc:  # show the events anyway, and say why they do not fold
            timeline, fold_error = [], str(exc)
        alive = None
        if status.claimed_by is not None:
            alive = self.liveness.alive([status.claimed_by]).get(status.claimed_by, False)
        return JobPage(
            status=status,
            steps=timeline,
            payload=_payload(history),
            chain=chain_status(history),
            holder_alive=alive,
            fold_error=fold_error,
        )

    def held_by(self, identities: Sequence[str]) -> dict[str, list[str]]:
        """The jobs each of ``identities`` holds, in one query of at most :data:`HELD_ROWS`."""
        if not identities:
            return {}
        query = (
            select(jobs.c.claimed_by, jobs.c.job_id)
            .where(jobs.c.claimed_by.in_(identities))
            .order_by(jobs.c.claimed_by)
            .limit(HELD_ROWS)
        )
        held: dict[str, list[str]] = {}
        for row in self._all(query):
            held.setdefault(row.claimed_by, []).append(row.job_id)
        return held

    def search(self, text: str) -> list[str]:
        """Job ids starting with ``text``, in id order (at most :data:`SEARCH_ROWS`)."""
        prefix = checked_lookup(text)
        query = (
            select(jobs.c.job_id)
            .where(jobs.c.job_id >= prefix)
            .order_by(jobs.c.job_id)
            .limit(SEARCH_ROWS)
        )
        return [row.job_id for row in self._all(query) if row.job_id.startswith(prefix)]

    def exists(self, job_id: str) -> bool:
        query = select(jobs.c.job_id).where(jobs.c.job_id == checked_lookup(job_id))
        return bool(self._all(query))

    def jobs(self, state: str | None, queue: str | None, limit: int) -> list[JobStatus]:
        """``jobledger jobs``: statuses in id order, at most ``limit``."""
        found = self.ledger.jobs(state=state, queue=queue)
        return list(itertools.islice(found, limit))

    # -- plumbing ---------------------------------------------------------------------

    def _jobs(self, *where: Any, order: Sequence[Any] | None = None) -> list[JobStatus]:
        # Default order: (state, queue), the order of the index these filters use.
        ordering = order if order is not None else (jobs.c.state, jobs.c.queue)
        query = select(jobs).where(*where).order_by(*ordering).limit(ROWS)
        return [status_from_row(row) for row in self._all(query)]

    def _checkpoint(self, name: str) -> int | None:
        query = select(checkpoints.c.position).where(checkpoints.c.name == name)
        rows = self._all(query)
        return int(rows[0].position) if rows else None

    def _now(self) -> datetime:
        with translated_errors(self.engine), self.engine.connect() as conn:
            now: datetime = conn.execute(select(self._clock)).scalar_one()
        return now

    def _all(self, query: Any) -> list[Any]:
        with translated_errors(self.engine), self.engine.connect() as conn:
            return list(conn.execute(query).all())


def _payload(history: Sequence[Event]) -> Any:
    """The data the job was enqueued with (the first event records ``{queue, data}``)."""
    first = history[0].data if history else None
    return first.get("data") if isinstance(first, dict) else first


def _refreshed_ago(ttl: float, remaining: float | None) -> float | None:
    return None if remaining is None else max(0.0, ttl - remaining)


def chain_status(history: Sequence[Event]) -> ChainStatus:
    """Check one job's hash chain as ``verify`` does (same rule, same wording)."""
    problems: list[str] = []
    previous = GENESIS
    for expected, event in enumerate(history, start=1):
        if event.version != expected or event.prev_hash != previous:
            problems.append(
                f"version {event.version}: "
                + broken_link(expected, previous, event.version, event.prev_hash)
            )
        recomputed = event_hash(
            event.prev_hash,
            event.job_id,
            event.version,
            event.type,
            event.process,
            event.data,
            event.recorded_at,
        )
        if recomputed != event.hash:
            problems.append(f"version {event.version}: {BAD_HASH}")
        previous = event.hash
    return ChainStatus(ok=not problems, problems=problems)
