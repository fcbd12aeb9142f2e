"""AsyncLedger: the Ledger's commands, awaited, on psycopg's async connection or aiosqlite.

Load -> decide -> write, as :class:`jobledger.ledger.Ledger` does it: the same
argument checks, the same deciders of :mod:`jobledger.decisions` (validation,
fencing, sealing with :mod:`jobledger.chain`, folding with
:mod:`jobledger.projection`), and the statements of :mod:`jobledger.storage`,
sent by :class:`~jobledger.aio.store.AsyncStore`. Only the I/O differs, so a job
enqueued here can be claimed by a sync Ledger, and the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from .. import decisions, identity, names
from ..anchor import Head
from ..database import DEFAULT_URL, mask
from ..decisions import JobSpec
from ..encoding import normalize_payload
from ..errors import ConcurrencyConflict, DuplicateJob, LedgerError, UnknownJob
from ..ledger import (
    _CLAIMED_ROWS_KEPT,
    MAX_RACE_RETRIES,
    Decide,
    _Args,
    _check_filters,
    _Outcome,
    _text,
)
from ..lifecycle import EventType, State
from ..policy import RecoveryPolicy
from ..records import Claim, Event, JobStatus
from ..store import LostRace
from .connections import DEFAULT_POOL_SIZE, driver_for
from .store import AsyncStore

if TYPE_CHECKING:
    from .. import audit


class AsyncLedger:
    """The Ledger for asyncio: every command is a coroutine (``await ledger.claim(...)``).

    ``url`` is a ``postgresql+psycopg://`` (or ``postgresql://``) or ``sqlite://`` file
    URL, or an Engine for one (its dialect and URL are used; commands never go through
    it). ``pool_size`` bounds the connections commands use at once; more concurrent
    commands wait for one. Use ``async with AsyncLedger(url) as ledger`` or call
    :meth:`close`. Commands, arguments, return values and errors are the sync
    Ledger's (see :class:`jobledger.ledger.Ledger`).
    """

    def __init__(
        self,
        url: str | URL | Engine = DEFAULT_URL,
        *,
        heartbeat_interval: float = 10.0,
        batch_size: int = 5000,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if heartbeat_interval < 0 or batch_size < 1:
            raise ValueError("heartbeat_interval must be >= 0 and batch_size >= 1")
        self._owns_engine = not isinstance(url, Engine)
        driver = driver_for(url)
        self.engine = driver.engine
        self.heartbeat_interval = timedelta(seconds=heartbeat_interval)
        self.batch_size = batch_size
        self._store = AsyncStore(driver, pool_size)
        # As the sync Ledger: rows last written for claimed jobs, a guard's guess only.
        self._claimed_rows: dict[str, JobStatus] = {}

    # -- lifecycle of the AsyncLedger object ----------------------------------------------

    async def close(self) -> None:
        """Close the connections commands held (and an engine this ledger made)."""
        await self._store.close()
        if self._owns_engine:
            self.engine.dispose()

    async def __aenter__(self) -> AsyncLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncLedger({mask(self.engine.url)!r})"

    @property
    def connections(self) -> tuple[int, int]:
        """How many connections are open and how many of them idle (for tests and metrics)."""
        pool = self._store.connections
        return pool.open, pool.idle

    # -- producing ------------------------------------------------------------------------

    async def enqueue(
        self, job_id: str, queue: str = "default", data: Any = None, process: str | None = None
    ) -> JobStatus:
        """Record a new job. ``DuplicateJob`` if the id was ever used."""
        payload = {"queue": names.checked_new(queue, "queue"), "data": normalize_payload(data)}
        job_id = names.checked_new(job_id)
        written = await self._unread(None, job_id, decisions.enqueue, job_id, process, payload)
        if written is not None:
            return written
        return (await self._execute(job_id, decisions.enqueue, job_id, process, payload)).status

    async def enqueue_many(
        self,
        jobs: Iterable[JobSpec],
        queue: str = "default",
        process: str | None = None,
        *,
        skip_existing: bool = False,
    ) -> int:
        """Record many new jobs, ``batch_size`` per transaction; how many were new
        (as ``Ledger.enqueue_many``)."""
        queue = names.checked_new(queue, "queue")
        items = decisions.new_jobs(jobs)
        committed = 0
        try:
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                committed += await self._enqueue_batch(batch, queue, process, skip_existing)
        except LedgerError as exc:
            exc.committed = committed
            raise
        return committed

    async def _enqueue_batch(
        self, batch: list[tuple[str, Any]], queue: str, process: str | None, skip_existing: bool
    ) -> int:
        while True:
            if skip_existing:
                stored = await self._store.first_payloads([job_id for job_id, _ in batch])
                batch = decisions.not_yet_enqueued(batch, queue, stored)
                if not batch:
                    return 0

            def rows(now: datetime, batch: list[tuple[str, Any]] = batch) -> list[Any]:
                return [
                    decisions.first_step(job_id, queue, data, process, now)
                    for job_id, data in batch
                ]

            existing = await self._store.create_many(rows)
            if not existing:
                return len(batch)
            if not skip_existing:
                raise DuplicateJob(existing)

    # -- working --------------------------------------------------------------------------

    async def claim(self, job_id: str, process: str, *, seen: JobStatus | None = None) -> Claim:
        """Claim an enqueued job for ``process``; ``AlreadyClaimed`` if someone holds it.

        ``seen``: the job's row as someone saw it (``Ledger.claim``): one round trip where
        the database allows, a read more if it is stale.
        """
        identity.validate(process)
        names.checked_lookup(job_id)
        status = None
        if seen is not None:
            if seen.job_id != job_id:
                raise ValueError(f"seen is the row of {seen.job_id!r}, not of {job_id!r}")
            status = await self._unread(seen, job_id, decisions.claim, job_id, process)
        if status is None:
            status = (await self._execute(job_id, decisions.claim, job_id, process)).status
        assert status.claim_token is not None  # set by every claimed event
        return Claim(job_id, status.claim_token, status.attempt, process)

    async def skip_delivery(
        self, job_id: str, process: str, *, holder_token: int | None = None, why: str = ""
    ) -> JobStatus | None:
        """Record that ``process`` did not run a duplicate delivery (``Ledger.skip_delivery``)."""
        identity.validate(process)
        why = _text(why, "why") or ""
        outcome = await self._execute(
            job_id, decisions.skip_delivery, job_id, process, holder_token, why
        )
        return outcome.status if outcome.wrote else None

    async def heartbeat(self, claim: Claim, progress: Any = None) -> bool:
        """Show the job is still being worked on; ``True`` if an event was written."""
        data = {"progress": normalize_payload(progress, "progress")}
        throttle = self.heartbeat_interval
        return (await self._as_holder(claim, EventType.HEARTBEAT, data, throttle)).wrote

    async def complete(self, claim: Claim, result: Any = None) -> JobStatus:
        """Record success. ``StaleClaim`` if the claim is no longer the job's current one."""
        data = {"result": normalize_payload(result, "result")}
        return (await self._as_holder(claim, EventType.COMPLETED, data)).status

    async def fail(self, claim: Claim, error: str) -> JobStatus:
        """Record failure with an error message. ``StaleClaim`` as for ``complete``."""
        data = {"error": _text(error, "error")}
        return (await self._as_holder(claim, EventType.FAILED, data)).status

    async def release(self, claim: Claim, reason: str | None = None) -> JobStatus:
        """Give the job back to its queue; ``StaleClaim`` as for ``complete``."""
        data = {"reason": _text(reason, "reason")}
        return (await self._as_holder(claim, EventType.RELEASED, data)).status

    async def _as_holder(
        self, claim: Claim, event: str, data: dict[str, Any], throttle: timedelta | None = None
    ) -> _Outcome:
        known = self._claimed_rows.get(claim.job_id)
        if known is not None:
            args = (claim, event, data, throttle)
            written = await self._unread(known, claim.job_id, decisions.as_holder, *args, held=True)
            if written is not None:
                return _Outcome(written, wrote=True)
        return await self._execute(claim.job_id, decisions.as_holder, claim, event, data, throttle)

    async def _unread(
        self,
        known: JobStatus | None,
        job_id: str,
        decide: Decide[_Args],
        *args: Any,
        held: bool = False,
    ) -> JobStatus | None:
        """``decide`` on ``known`` and write in one round trip, guarded by that row (``held``:
        one this process wrote) and the database clock, as ``Ledger._unread``; ``None``,
        nothing written, where the backend cannot or the guard refused."""
        store = self._store
        if not store.appends_unread:
            return None
        step, written = await store.write_unread(
            known, lambda now: decisions.unread(known, now, job_id, decide, *args), held
        )
        if step is None:
            return None
        if not written:
            self._claimed_rows.pop(job_id, None)
            return None
        self._remember(step[1])
        return step[1]

    def _remember(self, status: JobStatus) -> None:
        """Keep the row just written while the job is claimed (as the sync Ledger does)."""
        if not self._store.appends_unread:
            return
        if status.state == State.CLAIMED:
            if len(self._claimed_rows) >= _CLAIMED_ROWS_KEPT:
                self._claimed_rows.clear()
            self._claimed_rows[status.job_id] = status
        else:
            self._claimed_rows.pop(status.job_id, None)

    # -- recovering and operating ---------------------------------------------------------

    async def abandon(
        self,
        job_id: str,
        token: int,
        reason: str,
        process: str | None = None,
        policy: RecoveryPolicy | None = None,
    ) -> JobStatus:
        """End the claim ``token`` of a holder presumed dead (``Ledger.abandon``)."""
        why = _text(reason, "reason")
        outcome = await self._execute(
            job_id, decisions.abandon, job_id, token, why, process, policy
        )
        return outcome.status

    async def requeue(
        self, job_id: str, reason: str | None = None, process: str | None = None
    ) -> JobStatus:
        """Put an abandoned or failed job back in its queue."""
        return await self._operate(job_id, EventType.REQUEUED, reason, process)

    async def cancel(
        self, job_id: str, reason: str | None = None, process: str | None = None
    ) -> JobStatus:
        """Withdraw a job that is still waiting in its queue."""
        return await self._operate(job_id, EventType.CANCELLED, reason, process)

    async def _operate(
        self, job_id: str, event: str, reason: str | None, process: str | None
    ) -> JobStatus:
        data = {"reason": _text(reason, "reason")}
        outcome = await self._execute(job_id, decisions.operate, job_id, event, process, data)
        return outcome.status

    # -- reading --------------------------------------------------------------------------

    async def status(self, job_id: str) -> JobStatus:
        """The job's current status. ``UnknownJob`` if it does not exist."""
        found = await self._store.status(names.checked_lookup(job_id))
        return decisions.known(job_id, found)

    async def history(self, job_id: str) -> list[Event]:
        """Every event of the job, oldest first. ``UnknownJob`` if it has none."""
        events = await self._store.history(names.checked_lookup(job_id))
        if not events:
            raise UnknownJob(job_id)
        return events

    def jobs(
        self, state: str | None = None, queue: str | None = None, claimed_by: str | None = None
    ) -> AsyncIterator[JobStatus]:
        """Current statuses, optionally filtered, in job-id order: ``async for status in ...``."""
        _check_filters(state, queue)
        return self._store.statuses(state=state, queue=queue, claimed_by=claimed_by)

    # -- auditing: bulk reads through the sync engine, off the loop -----------------------

    async def verify(
        self,
        progress: audit.Progress | None = None,
        workers: int | None = None,
        head: Head | str | None = None,
    ) -> audit.VerifyReport:
        """``Ledger.verify``, run in a thread (a bulk read, not a command; see the README)."""
        from .. import audit  # noqa: PLC0415 (processes that only command never load it)

        published = Head.parse(head) if isinstance(head, str) else head
        return await asyncio.to_thread(audit.verify, self.engine, progress, workers, published)

    async def head(self) -> Head | None:
        """``Ledger.head``, run in a thread: the anchor's last link, to publish."""
        from .. import audit  # noqa: PLC0415

        return await asyncio.to_thread(audit.last_link, self.engine)

    async def replay(self, until: datetime | None = None) -> dict[str, JobStatus]:
        """``Ledger.replay``, run in a thread."""
        from .. import audit  # noqa: PLC0415

        return await asyncio.to_thread(audit.replay, self.engine, until)

    async def export(self, out: TextIO, since: int | None = None) -> int:
        """``Ledger.export``, run in a thread."""
        from .. import audit  # noqa: PLC0415

        return await asyncio.to_thread(audit.export, self.engine, out, since)

    # -- the one write path ---------------------------------------------------------------

    async def _execute(
        self, job_id: str, decide: Decide[_Args], *args: _Args.args, **kwargs: _Args.kwargs
    ) -> _Outcome:
        """Load, decide, append; re-run on a lost race (as ``Ledger._execute``)."""
        names.checked_lookup(job_id)
        expected, attempted = 0, "append"
        for _ in range(MAX_RACE_RETRIES):
            try:
                async with self._store.command(job_id) as command:
                    plan = decide(command.status, command.now, *args, **kwargs)
                    steps = decisions.sealed(command.status, plan, job_id, command.now)
                    if not steps:
                        return _Outcome(decisions.known(job_id, command.status), wrote=False)
                    first = steps[0][0]
                    expected, attempted = first.version - 1, first.type
                    await command.write_all(steps)
            except LostRace:
                continue
            status = steps[-1][1]
            self._remember(status)
            if plan.refusal is not None:
                raise plan.refusal
            return _Outcome(status, wrote=True)
        raise ConcurrencyConflict(job_id, expected, attempted)
