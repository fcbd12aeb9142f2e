"""Catch-up projections: read models built from the events after the fact, exactly once.

A :class:`Projection` has a name and handles one event at a time, writing with
the connection it is given. :class:`CatchUp` feeds it the events after its
checkpoint in batches; a batch's writes and the advanced checkpoint commit in
one transaction, so each event is applied exactly once even when the runner
crashes half-way or two runners race (they queue on the checkpoint row).

Reading without gaps on PostgreSQL. Positions come from a sequence, which hands
them out when rows are inserted, not when transactions commit: a transaction
that took position 10 may commit after one that took 11, and a reader that had
already gone past 11 would never see 10. So the runner reads in the order of
the *writing transaction's id* and only below the horizon
``pg_snapshot_xmin(pg_current_snapshot())``: every transaction with a smaller
id has finished, so no event can ever appear below it later. A transaction that
stays open holds the horizon back: the runner waits for it, it never skips it
and never gives up on it after a timeout. The checkpoint is the pair
(transaction id, position). Nothing locks the events table.

Each job's events arrive in version order: an append to an existing job runs
in its own transaction, started after the previous version committed, so a
job's transaction ids grow with its versions.

On SQLite there is one writer at a time, so commit order is position order.
The queries are the backend's (``Backend.pending_events_query`` and
``held_back_query``, :mod:`jobledger.storage`).
"""

from __future__ import annotations

import abc
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy import exc as sa_exc

from .database import translated_errors
from .records import Event
from .runner import Runner
from .schema import checkpoints
from .storage import backend_for

if TYPE_CHECKING:
    from .ledger import Ledger

log = logging.getLogger("jobledger.catchup")

#: Events delivered per transaction.
BATCH_SIZE = 500
#: Seconds between warnings of an idle runner that is held back by an open transaction.
HOLDUP_REPORT_INTERVAL = 60.0


class Projection(abc.ABC):
    """A read model kept up to date from the events. ``name`` keys its checkpoint."""

    name: str

    @abc.abstractmethod
    def handle(self, event: Event, connection: Connection) -> None:
        """Apply one event, writing only through ``connection`` (the batch's transaction)."""

    def flush(self, connection: Connection) -> None:  # noqa: B027 (optional hook)
        """Write what the batch's :meth:`handle` calls gathered, before the checkpoint moves.

        A projection that writes a batch at once (one multi-row INSERT rather than
        one per event) does it here; a batch that fails rolls back either way.
        """

    def reset(self, connection: Connection) -> None:  # noqa: B027 (optional hook)
        """Forget everything, before the events are delivered again from the start."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last event a projection applied; ``tx_id`` is its writer's id (PostgreSQL only)."""

    position: int
    tx_id: int | None


@dataclass(frozen=True, slots=True)
class Holdup:
    """Committed events a runner cannot deliver yet, and the transaction they wait for.

    On PostgreSQL the oldest transaction still open on the server (any database)
    that has written something; its backend is ``None`` when it cannot be seen
    (a prepared transaction). ``database``, ``state`` and ``since`` are ``None``
    where PostgreSQL hides them from this role.
    """

    events: int
    pid: int | None
    database: str | None
    state: str | None
    since: datetime | None

    def __str__(self) -> str:
        if self.pid is None:
            behind = "a transaction that is not visible here (a prepared transaction?)"
        else:
            behind = f"the open transaction of backend {self.pid}"
            details = [
                f"database {self.database}" if self.database else "",
                self.state or "",
                f"since {self.since.isoformat(timespec='seconds')}" if self.since else "",
            ]
            if any(details):
                behind += f" ({', '.join(d for d in details if d)})"
        one = self.events == 1
        waiting = "1 committed event waits" if one else f"{self.events} committed events wait"
        return f"{waiting} behind {behind}; delivered once it ends"


class CatchUp(Runner):
    """Delivers every event to ``projection`` once, in batches of ``batch_size``.

    A :class:`~jobledger.runner.Runner`: :meth:`run_forever` polls every
    ``poll_interval`` seconds when idle, until :meth:`stop`.
    """

    def __init__(
        self,
        source: Ledger | Engine,
        projection: Projection,
        batch_size: int = BATCH_SIZE,
        *,
        poll_interval: float = 1.0,
        handle_signals: bool | None = False,
    ) -> None:
        super().__init__(handle_signals=handle_signals)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.engine: Engine = source if isinstance(source, Engine) else source.engine
        self.projection = projection
        self.batch_size = batch_size
        self._backend = backend_for(self.engine)
        self._query = self._backend.pending_events_query()  # ConfigurationError elsewhere
        self._writer = self.engine.execution_options(jobledger_write=True)  # SQLite: IMMEDIATE
        self._created = False
        self.poll_interval = poll_interval
        self._next_report = 0.0  # time.monotonic() of the next holdup warning, if idle

    def __str__(self) -> str:
        return f"catch-up of projection {self.projection.name!r}"

    def run_once(self) -> int:
        """Deliver every event that can be delivered now; how many were."""
        delivered = 0
        while True:
            count = self.run_batch()
            delivered += count
            if count < self.batch_size:
                return delivered

    def run_forever(
        self, stop: threading.Event | None = None, poll_interval: float | None = None
    ) -> None:
        """Keep delivering until :meth:`stop`, waiting ``poll_interval`` when idle.

        While idle it warns, at most every :data:`HOLDUP_REPORT_INTERVAL` seconds,
        when committed events wait behind a transaction left open. Passing a
        ``stop`` event (set it to stop) or ``poll_interval`` here is deprecated.
        """
        if stop is not None or poll_interval is not None:
            warnings.warn(
                "CatchUp.run_forever(stop, poll_interval) is deprecated: call CatchUp.stop() "
                "and pass poll_interval to CatchUp()",
                DeprecationWarning,
                stacklevel=2,
            )
            if stop is not None:
                self._stop = stop  # the caller's event now stops this runner, and stop() sets it
            if poll_interval is not None:
                self.poll_interval = poll_interval
        super().run_forever()

    def _starting(self) -> None:
        self._next_report = time.monotonic() + HOLDUP_REPORT_INTERVAL

    def _round(self) -> float:
        if self.run_once() > 0:
            return 0.0  # more may have come meanwhile: look again at once
        if time.monotonic() >= self._next_report:
            self._next_report = time.monotonic() + HOLDUP_REPORT_INTERVAL
            holdup = self.holdup()
            if holdup is not None:
                log.warning("projection %r: %s", self.projection.name, holdup)
        return self.poll_interval

    def holdup(self) -> Holdup | None:
        """What keeps committed events from being delivered now, if anything does.

        Only PostgreSQL can hold events back (see the module's docstring); on
        SQLite this is always ``None``.
        """
        held_back = self._backend.held_back_query()
        if held_back is None:
            return None
        self._ensure_checkpoint()
        with translated_errors(self.engine), self.engine.connect() as conn:
            start = self._read_checkpoint(conn)
            waiting = conn.execute(
                held_back, {"position": start.position, "tx_id": start.tx_id}
            ).scalar_one()
            if waiting == 0:
                return None
            oldest = conn.execute(self._backend.oldest_writer_query()).first()
        if oldest is None:
            return Holdup(waiting, None, None, None, None)
        return Holdup(waiting, *oldest)

    def run_batch(self) -> int:
        """Deliver up to ``batch_size`` events in one transaction; how many."""
        self._ensure_checkpoint()
        with translated_errors(self.engine), self._writer.begin() as conn:
            start = self._lock_checkpoint(conn)
            rows = conn.execute(
                self._query,
                {"position": start.position, "tx_id": start.tx_id, "limit": self.batch_size},
            ).all()
            for row in rows:
                self.projection.handle(Event(*row[:9]), conn)
            if rows:
                self.projection.flush(conn)
                self._advance(conn, Checkpoint(rows[-1].position, rows[-1].tx_id))
        return len(rows)

    def checkpoint(self) -> Checkpoint:
        """Where the projection stands."""
        self._ensure_checkpoint()
        with translated_errors(self.engine), self.engine.connect() as conn:
            return self._read_checkpoint(conn)

    def reset(self) -> None:
        """Clear the projection and its checkpoint, in one transaction."""
        self._ensure_checkpoint()
        with translated_errors(self.engine), self._writer.begin() as conn:
            self._lock_checkpoint(conn)
            self.projection.reset(conn)
            self._advance(conn, self._origin())

    def _origin(self) -> Checkpoint:
        return Checkpoint(0, self._backend.initial_checkpoint_tx)

    def _ensure_checkpoint(self) -> None:
        if self._created:
            return
        origin = self._origin()
        row = {"name": self.projection.name, "position": origin.position, "tx_id": origin.tx_id}
        exists = select(checkpoints.c.name).where(checkpoints.c.name == row["name"])
        create = insert(checkpoints).values(**row, updated_at=self._backend.clock())
        with translated_errors(self.engine):
            try:
                with self._writer.begin() as conn:
                    if conn.execute(exists).first() is None:
                        conn.execute(create)
            except sa_exc.IntegrityError:
                pass  # another runner created it first
        self._created = True

    def _lock_checkpoint(self, conn: Connection) -> Checkpoint:
        return self._read_checkpoint(conn, for_update=True)

    def _read_checkpoint(self, conn: Connection, for_update: bool = False) -> Checkpoint:
        query = select(checkpoints.c.position, checkpoints.c.tx_id).where(
            checkpoints.c.name == self.projection.name
        )
        if for_update:  # a second runner waits here until this batch commits
            query = query.with_for_update()
        row = conn.execute(query).one()
        return Checkpoint(row.position, row.tx_id)

    def _advance(self, conn: Connection, to: Checkpoint) -> None:
        conn.execute(
            update(checkpoints)
            .where(checkpoints.c.name == self.projection.name)
            .values(
                position=to.position,
                tx_id=to.tx_id,
                updated_at=self._backend.clock(),
            )
        )


def __getattr__(name: str) -> Any:
    """The queue statistics projection moved to :mod:`jobledger.stats`; old imports still work."""
    if name in {"DESTINATION", "QueueStat", "QueueStats"}:
        from . import stats  # noqa: PLC0415 (stats imports this module)

        return getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
