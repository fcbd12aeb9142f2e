"""Queue statistics: a catch-up projection counting jobs per queue and state, and runs.

Kept up to date by a :class:`~jobledger.catchup.CatchUp` runner (``jobledger
queues`` runs one before it reads), in ``jobledger_queue_stats``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Double, Engine, bindparam, case, delete, insert, select, update
from sqlalchemy.sql.elements import BindParameter

from .catchup import Projection
from .database import translated_errors
from .lifecycle import MOVES, EventType, State
from .records import Event
from .schema import events, queue_stats

if TYPE_CHECKING:
    from .ledger import Ledger

#: The state each state-changing event leads to (heartbeat and rejected change nothing).
DESTINATION: Mapping[str, str] = {
    event: after for (before, event), after in MOVES.items() if after != before
}
assert all(  # a move's destination never depends on where it came from
    MOVES[(before, event)] == DESTINATION[event]
    for (before, event), after in MOVES.items()
    if after != before
)


@dataclass(frozen=True, slots=True)
class QueueStat:
    """One queue and state: jobs in it now; claims that ended in it, and how long they ran."""

    queue: str
    state: str
    jobs: int
    runs: int
    run_seconds: float
    max_run_seconds: float

    @property
    def mean_run_seconds(self) -> float | None:
        return self.run_seconds / self.runs if self.runs else None


# Statements QueueStats runs for every event, built once.
_FIRST_DATA = select(events.c.data).where(
    events.c.job_id == bindparam("job_id"), events.c.version == 1
)
_PREVIOUS_MOVE = (
    select(events.c.type, events.c.recorded_at)
    .where(
        events.c.job_id == bindparam("job_id"),
        events.c.version < bindparam("version"),
        events.c.type.in_(list(DESTINATION)),
    )
    .order_by(events.c.version.desc())
    .limit(1)
)
_seconds: BindParameter[float] = bindparam("d_seconds", type_=Double())
_ADD_TO_COUNTS = (
    update(queue_stats)
    .where(queue_stats.c.queue == bindparam("k_queue"), queue_stats.c.state == bindparam("k_state"))
    .values(
        jobs=queue_stats.c.jobs + bindparam("d_jobs"),
        runs=queue_stats.c.runs + bindparam("d_runs"),
        run_seconds=queue_stats.c.run_seconds + _seconds,
        max_run_seconds=case(
            (queue_stats.c.max_run_seconds < _seconds, _seconds),
            else_=queue_stats.c.max_run_seconds,
        ),
    )
)


class QueueStats(Projection):
    """Per queue: how many jobs are in each state, and how long runs took until they ended.

    A run is a claim; it ends in ``completed``, ``failed``, ``abandoned`` or (released)
    ``enqueued``, and lasts from the ``claimed`` event to the ending one, both by the
    database clock. Kept in ``jobledger_queue_stats``.
    """

    name = "queue_stats"

    def handle(self, event: Event, connection: Connection) -> None:
        after = DESTINATION.get(event.type)
        if after is None:
            return
        if event.type == EventType.ENQUEUED:
            self._count(connection, event.data["queue"], after, +1)
            return
        queue = self._queue(connection, event.job_id)
        before, since = self._previous_move(connection, event)
        self._count(connection, queue, before, -1)
        run = (event.recorded_at - since).total_seconds() if before == State.CLAIMED else None
        self._count(connection, queue, after, +1, run)

    def reset(self, connection: Connection) -> None:
        connection.execute(delete(queue_stats))

    @staticmethod
    def read(source: Ledger | Engine) -> list[QueueStat]:
        """The statistics as they stand, ordered by queue and state."""
        engine = source if isinstance(source, Engine) else source.engine
        query = select(queue_stats).order_by(queue_stats.c.queue, queue_stats.c.state)
        with translated_errors(engine), engine.connect() as conn:
            return [QueueStat(*row) for row in conn.execute(query)]

    @staticmethod
    def _queue(conn: Connection, job_id: str) -> str:
        queue: str = conn.execute(_FIRST_DATA, {"job_id": job_id}).scalar_one()["queue"]
        return queue

    @staticmethod
    def _previous_move(conn: Connection, event: Event) -> tuple[str, datetime]:
        """The state before ``event`` and when the job entered it."""
        params = {"job_id": event.job_id, "version": event.version}
        row = conn.execute(_PREVIOUS_MOVE, params).one()
        return DESTINATION[row.type], row.recorded_at

    @staticmethod
    def _count(
        conn: Connection, queue: str, state: str, jobs: int, run: float | None = None
    ) -> None:
        runs, seconds = (1, run) if run is not None else (0, 0.0)
        change = {"k_queue": queue, "k_state": state, "d_jobs": jobs, "d_runs": runs}
        changed = conn.execute(_ADD_TO_COUNTS, {**change, "d_seconds": seconds})
        if changed.rowcount == 0:  # only this runner writes here: it holds the checkpoint
            row = {"queue": queue, "state": state, "jobs": jobs, "runs": runs}
            conn.execute(
                insert(queue_stats), {**row, "run_seconds": seconds, "max_run_seconds": seconds}
            )
