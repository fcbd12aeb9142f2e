"""The Ledger: every command on a job is one validated, version-guarded append."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TextIO

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from . import decisions, identity, names
from .anchor import Head
from .database import DEFAULT_URL, engine_for, mask
from .decisions import JobSpec
from .encoding import normalize_payload
from .errors import ConcurrencyConflict, DuplicateJob, LedgerError, UnknownJob
from .lifecycle import EventType, State
from .policy import RecoveryPolicy
from .records import Claim, Event, JobStatus
from .storage.reads import HeldClaim
from .store import LostRace, Store

if TYPE_CHECKING:
    from . import audit

#: How often one command re-reads and retries after losing a race to another writer.
MAX_RACE_RETRIES = 25
_STATES = frozenset(state.value for state in State)

#: Rows of claimed jobs a Ledger keeps to skip a holder's read (a worker holds a few).
_CLAIMED_ROWS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: JobStatus
    wrote: bool  # False when the plan was to write nothing (a throttled heartbeat)


_Args = ParamSpec("_Args")
#: A function of :mod:`jobledger.decisions`: (status as loaded, database now, arguments) -> Plan.
Decide = Callable[Concatenate[JobStatus | None, datetime, _Args], decisions.Plan]


class Ledger:
    """An append-only record of job lifecycles in an SQL database.

    ``url`` is a SQLAlchemy URL (``postgresql://`` means psycopg 3) or an Engine.
    ``heartbeat_interval`` is the minimum number of seconds between two recorded
    heartbeats of one job; heartbeats inside it are checked but not written.

    Threads may share one Ledger (the integrations heartbeat from a thread beside
    the task; a Celery threads pool runs tasks side by side). Each command runs on
    a connection of its own: an idle one the store keeps checked out
    (``HeldConnections``, whose list ``pop``/``append`` are atomic) or a fresh one
    from the engine's pool, given back when done, so no two commands share a
    transaction. The rows remembered for holders sit in a dict changed one atomic
    operation at a time; a row left behind by a slower thread is only a guess that
    the version guard refuses, and the command then reads the job. Not for threads:
    an in-memory SQLite URL (its ``StaticPool`` has one connection for everyone).
    Call :meth:`close` once the threads are done: a command still running would
    keep its connection. After ``fork()`` the child never uses the parent's
    connections; it opens its own.
    """

    def __init__(
        self,
        url: str | URL | Engine = DEFAULT_URL,
        *,
        heartbeat_interval: float = 10.0,
        batch_size: int = 5000,
    ) -> None:
        if heartbeat_interval < 0 or batch_size < 1:
            raise ValueError("heartbeat_interval must be >= 0 and batch_size >= 1")
        self._owns_engine = not isinstance(url, Engine)
        self.engine = engine_for(url)
        self.heartbeat_interval = timedelta(seconds=heartbeat_interval)
        self.batch_size = batch_size
        self._store = Store(self.engine)
        # The row this Ledger last wrote for each job it saw claimed: a holder's next
        # command can then skip the read (see _as_holder). Never trusted: only a guard.
        self._claimed_rows: dict[str, JobStatus] = {}

    # -- lifecycle of the Ledger object -------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest revision (Alembic ``upgrade head``)."""
        from . import migrate  # noqa: PLC0415 (Alembic costs ~0.1 s to import; workers never use it)

        migrate.upgrade(self.engine)

    def prepare(self) -> None:
        """Do now what the first command would: connect (the dialect learns the server) and
        compile the command statements; then hang up, leaving no connection in the pool
        (of an engine it created).

        For a process that forks workers: call it before forking, and each child's first
        command only opens its own connection. ``DatabaseUnavailable`` if it cannot connect.
        """
        self._store.prepare()
        self._store.close()
        if self._owns_engine:
            self.engine.dispose()

    def warm_up(self) -> None:
        """Open this process's connection for commands ahead of its first command.

        Safe from another thread while this one does other work; ``DatabaseUnavailable``
        if it cannot connect (the next command will try again).
        """
        self._store.warm_up()

    def close(self) -> None:
        """Release pooled connections (only of an engine this Ledger created)."""
        self._store.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({mask(self.engine.url)!r})"

    # -- producing ----------------------------------------------------------------------

    def enqueue(
        self, job_id: str, queue: str = "default", data: Any = None, process: str | None = None
    ) -> JobStatus:
        """Record a new job. ``DuplicateJob`` if the id was ever used."""
        payload = {"queue": names.checked_new(queue, "queue"), "data": normalize_payload(data)}

        job_id = names.checked_new(job_id)
        written = self._unread(None, job_id, decisions.enqueue, job_id, process, payload)
        if written is not None:
            return written
        return self._execute(job_id, decisions.enqueue, job_id, process, payload).status

    def enqueue_many(
        self,
        jobs: Iterable[JobSpec],
        queue: str = "default",
        process: str | None = None,
        *,
        skip_existing: bool = False,
    ) -> int:
        """Record many new jobs, ``batch_size`` per transaction; returns how many were new.

        ``jobs`` holds ids or ``(id, data)`` pairs. Everything is validated before
        the first write. If a job already exists, its batch writes nothing and
        ``DuplicateJob`` says how many jobs of earlier batches were committed; so
        does any other ``LedgerError`` that stops it (its ``committed``).

        ``skip_existing`` resumes an interrupted call: ids that already exist with
        this queue and the same data are skipped; one that exists with another
        queue or other data is still a ``DuplicateJob``.
        """
        queue = names.checked_new(queue, "queue")
        items = decisions.new_jobs(jobs)
        committed = 0
        try:
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                committed += self._enqueue_batch(batch, queue, process, skip_existing)
        except LedgerError as exc:
            exc.committed = committed
            raise
        return committed

    def _enqueue_batch(
        self, batch: list[tuple[str, Any]], queue: str, process: str | None, skip_existing: bool
    ) -> int:
        """Write one batch in one transaction; how many jobs it created."""
        while True:
            if skip_existing:
                stored = self._store.first_payloads([job_id for job_id, _ in batch])
                batch = decisions.not_yet_enqueued(batch, queue, stored)
                if not batch:
                    return 0

            def rows(now: datetime, batch: list[tuple[str, Any]] = batch) -> list[Any]:
                return [
                    decisions.first_step(job_id, queue, data, process, now)
                    for job_id, data in batch
                ]

            existing = self._store.create_many(rows)
            if not existing:
                return len(batch)
            if not skip_existing:
                raise DuplicateJob(existing)
            # Another producer created some of them since we looked: look again.

    # -- working ------------------------------------------------------------------------

    def claim(self, job_id: str, process: str, *, seen: JobStatus | None = None) -> Claim:
        """Claim an enqueued job for ``process``; ``AlreadyClaimed`` if someone holds it.

        ``seen`` is the job's row as someone saw it, say the publisher that enqueued
        it (:mod:`jobledger.handoff` carries it in a job system's message). Where the
        database allows, the claim then goes out without reading the job first,
        guarded by that whole row: a stale or wrong one costs a read, nothing else.
        """
        identity.validate(process)
        names.checked_lookup(job_id)
        status = None
        if seen is not None:
            if seen.job_id != job_id:
                raise ValueError(f"seen is the row of {seen.job_id!r}, not of {job_id!r}")
            status = self._unread(seen, job_id, decisions.claim, job_id, process)
        if status is None:
            status = self._execute(job_id, decisions.claim, job_id, process).status
        assert status.claim_token is not None  # set by every claimed event
        return Claim(job_id, status.claim_token, status.attempt, process)

    def skip_delivery(
        self, job_id: str, process: str, *, holder_token: int | None = None, why: str = ""
    ) -> JobStatus | None:
        """Record that ``process`` did not run a duplicate delivery of ``job_id``.

        A delivery is a duplicate when the job is completed or cancelled, or while
        it is still held under claim ``holder_token`` (a holder the caller found not
        dead; ``why`` says so, e.g. ``"claimed by live process X"``). The skip is a
        ``rejected`` event (a refused claim: it moves nothing) by ``process``, with
        ``{"attempted": "claimed", "reason": "duplicate delivery: ...", "holder",
        "current_token", "state"}``; the job's status is returned. If the job is no
        longer so (released, taken over, requeued) nothing is written and ``None``
        says the delivery should try to claim again. Use :meth:`Worker.claim_delivery
        <jobledger.worker.Worker.claim_delivery>`, which decides liveness for you.
        """
        identity.validate(process)
        why = _text(why, "why") or ""
        outcome = self._execute(job_id, decisions.skip_delivery, job_id, process, holder_token, why)
        return outcome.status if outcome.wrote else None

    def heartbeat(self, claim: Claim, progress: Any = None) -> bool:
        """Show the job is still being worked on; ``True`` if an event was written.

        Heartbeats closer together than ``heartbeat_interval`` are validated
        (a stale claim still raises ``StaleClaim``) but not written.
        """
        data = {"progress": normalize_payload(progress, "progress")}
        return self._as_holder(claim, EventType.HEARTBEAT, data, self.heartbeat_interval).wrote

    def complete(self, claim: Claim, result: Any = None) -> JobStatus:
        """Record success. ``StaleClaim`` if the claim is no longer the job's current one."""
        data = {"result": normalize_payload(result, "result")}
        return self._as_holder(claim, EventType.COMPLETED, data).status

    def fail(self, claim: Claim, error: str) -> JobStatus:
        """Record failure with an error message. ``StaleClaim`` as for ``complete``."""
        return self._as_holder(claim, EventType.FAILED, {"error": _text(error, "error")}).status

    def release(self, claim: Claim, reason: str | None = None) -> JobStatus:
        """Give the job back to its queue (graceful shutdown); ``StaleClaim`` as ``complete``."""
        data = {"reason": _text(reason, "reason")}
        return self._as_holder(claim, EventType.RELEASED, data).status

    def _as_holder(
        self, claim: Claim, event: str, data: dict[str, Any], throttle: timedelta | None = None
    ) -> _Outcome:
        known = self._claimed_rows.get(claim.job_id)
        if known is not None:
            args = (claim, event, data, throttle)
            written = self._unread(known, claim.job_id, decisions.as_holder, *args, held=True)
            if written is not None:
                return _Outcome(written, wrote=True)
        return self._execute(claim.job_id, decisions.as_holder, claim, event, data, throttle)

    def _unread(
        self,
        known: JobStatus | None,
        job_id: str,
        decide: Decide[_Args],
        *args: Any,
        held: bool = False,
    ) -> JobStatus | None:
        """``decide`` on ``known`` (the job's row, not read: remembered, ``held``, or handed
        over; ``None`` for a new job) and write in one round trip, guarded by that row and
        the database clock; the status written, or ``None``, nothing written, where the
        backend cannot or the guard refused: the ordinary command then reads the job and
        decides again on what it finds."""
        store = self._store
        if not store.appends_unread:
            return None
        step, written = store.write_unread(
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
        """Keep the row just written while the job is claimed (a bounded memory), where a
        holder's next write can use it."""
        if not self._store.appends_unread:
            return
        if status.state == State.CLAIMED:
            if len(self._claimed_rows) >= _CLAIMED_ROWS_KEPT:
                self._claimed_rows.clear()
            self._claimed_rows[status.job_id] = status
        else:
            self._claimed_rows.pop(status.job_id, None)

    # -- recovering and operating -------------------------------------------------------

    def abandon(
        self,
        job_id: str,
        token: int,
        reason: str,
        process: str | None = None,
        policy: RecoveryPolicy | None = None,
    ) -> JobStatus:
        """End the claim ``token`` of a holder presumed dead. ``StaleClaim`` if it already ended.

        Because the token is checked against the job's current claim inside the
        version-guarded append, a late ``complete`` and an ``abandon`` can never
        both succeed, and two recovery processes never both abandon one claim.
        With a ``policy`` that gives the job another attempt, ``requeued`` is
        appended in the same transaction (the returned state is then ``enqueued``):
        a crash can never leave the job abandoned halfway through its recovery.
        """
        why = _text(reason, "reason")
        return self._execute(job_id, decisions.abandon, job_id, token, why, process, policy).status

    def requeue(
        self, job_id: str, reason: str | None = None, process: str | None = None
    ) -> JobStatus:
        """Put an abandoned or failed job back in its queue."""
        return self._operate(job_id, EventType.REQUEUED, reason, process)

    def cancel(
        self, job_id: str, reason: str | None = None, process: str | None = None
    ) -> JobStatus:
        """Withdraw a job that is still waiting in its queue."""
        return self._operate(job_id, EventType.CANCELLED, reason, process)

    def _operate(
        self, job_id: str, event: str, reason: str | None, process: str | None
    ) -> JobStatus:
        data = {"reason": _text(reason, "reason")}
        return self._execute(job_id, decisions.operate, job_id, event, process, data).status

    # -- reading ------------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus:
        """The job's current status. ``UnknownJob`` if it does not exist."""
        return decisions.known(job_id, self._store.status(names.checked_lookup(job_id)))

    def history(self, job_id: str) -> list[Event]:
        """Every event of the job, oldest first. ``UnknownJob`` if it has none."""
        events = self._store.history(names.checked_lookup(job_id))
        if not events:
            raise UnknownJob(job_id)
        return events

    def jobs(
        self, state: str | None = None, queue: str | None = None, claimed_by: str | None = None
    ) -> Iterator[JobStatus]:
        """Current statuses, optionally filtered, in job-id order (fetched page by page)."""
        _check_filters(state, queue)
        return self._store.statuses(state=state, queue=queue, claimed_by=claimed_by)

    # -- auditing (see jobledger.audit) -------------------------------------------------

    def verify(
        self,
        progress: audit.Progress | None = None,
        workers: int | None = None,
        head: Head | str | None = None,
    ) -> audit.VerifyReport:
        """Check every hash chain, every lifecycle path, the projection and the anchor.

        A large ledger is checked by ``workers`` processes (default: one per CPU, up to 8).
        ``head`` is a published anchor head (``SEQ:DIGEST`` or a :class:`Head`): its link
        must still be in the anchor, unchanged.
        """
        from . import audit  # noqa: PLC0415 (processes that only command never load it)

        published = Head.parse(head) if isinstance(head, str) else head
        return audit.verify(self.engine, progress, workers, published)

    def head(self) -> Head | None:
        """The ledger-wide anchor's last link, to publish; ``None`` before any is sealed."""
        from . import audit  # noqa: PLC0415 (processes that only command never load it)

        return audit.last_link(self.engine)

    def replay(self, until: datetime | None = None) -> dict[str, JobStatus]:
        """Every job's status as of ``until`` (database clock), folded from the events alone."""
        from . import audit  # noqa: PLC0415 (processes that only command never load it)

        return audit.replay(self.engine, until)

    def rebuild(self, progress: audit.Progress | None = None, workers: int | None = None) -> int:
        """Re-fold the projection from the events in one transaction; the number of jobs.

        A large ledger is folded by ``workers`` processes (default: one per CPU, up to 8).
        """
        from . import audit  # noqa: PLC0415 (processes that only command never load it)

        return audit.rebuild(self.engine, progress, workers)

    def export(
        self, out: TextIO, since: int | None = None, progress: audit.Progress | None = None
    ) -> int:
        """Write the events after position ``since`` to ``out`` as JSON lines; how many."""
        from . import audit  # noqa: PLC0415 (processes that only command never load it)

        return audit.export(self.engine, out, since, progress)

    # -- the one write path -------------------------------------------------------------

    def _execute(
        self, job_id: str, decide: Decide[_Args], *args: _Args.args, **kwargs: _Args.kwargs
    ) -> _Outcome:
        """Load, decide, append; re-run on a lost race, so ``decide`` sees the winner's write."""
        names.checked_lookup(job_id)
        expected, attempted = 0, "append"
        for _ in range(MAX_RACE_RETRIES):
            try:
                with self._store.command(job_id) as command:
                    plan = decide(command.status, command.now, *args, **kwargs)
                    steps = decisions.sealed(command.status, plan, job_id, command.now)
                    if not steps:
                        return _Outcome(decisions.known(job_id, command.status), wrote=False)
                    first = steps[0][0]
                    expected, attempted = first.version - 1, first.type
                    if len(steps) == 1:
                        command.write(*steps[0])
                    else:
                        command.write_all(steps)
            except LostRace:
                continue
            status = steps[-1][1]
            self._remember(status)
            if plan.refusal is not None:
                raise plan.refusal
            return _Outcome(status, wrote=True)
        raise ConcurrencyConflict(job_id, expected, attempted)

    # -- reading for the recovery projector, the CLI and the demo -----------------------

    def claim_holders(self) -> set[str]:
        """Every process that holds a claim now."""
        return self._store.claim_holders()

    def claims_per_holder(self) -> dict[str, int]:
        """How many jobs each process that holds a claim now holds."""
        return self._store.claims_per_holder()

    def claims_held_by(self, holders: Collection[str]) -> list[HeldClaim]:
        """The claimed jobs of ``holders``, each with the database clock's ``now``."""
        return self._store.claims_held_by(holders)

    def held_job_ids(self, holders: Collection[str]) -> dict[str, list[str]]:
        """The ids of the jobs each of ``holders`` has claimed, in id order."""
        return self._store.held_job_ids(holders)

    def replay_job(self, job_id: str, until: datetime) -> JobStatus | None:
        """``job_id``'s status as of ``until`` (database clock); ``None`` if it had no event
        by then."""
        from . import audit  # noqa: PLC0415 (processes that only command never load it)

        return audit.replay(self.engine, until, job_id).get(job_id)

    def state_counts(self, until: datetime | None = None) -> dict[str, int]:
        """How many jobs are in each state: now, or replayed as of ``until``."""
        from . import audit  # noqa: PLC0415 (processes that only command never load it)

        return audit.state_counts(self.engine, until)

    def events_after(self, position: int) -> list[Event]:
        """The events appended after ``position``, in position order."""
        return self._store.events_after(position)

    def last_position(self) -> int:
        """The position of the latest event (0 if there is none)."""
        return self._store.last_position()


def _check_filters(state: str | None, queue: str | None) -> None:
    """``ValueError`` for an unknown state, ``InvalidJobId`` for a malformed queue name."""
    if state is not None and state not in _STATES:
        known = ", ".join(s.value for s in State)
        raise ValueError(f"unknown state {state!r}; states are {known}")
    if queue is not None:
        names.checked_lookup(queue, "queue")


def _text(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    return normalize_payload(value, what)  # type: ignore[no-any-return]
