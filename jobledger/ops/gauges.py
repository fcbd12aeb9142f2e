"""Per-queue job counts and catch-up lag, read from the database every few seconds.

Counting jobs in the projection table would read every row (millions of finished
jobs), so the counts come from the queue statistics projection
(:class:`~jobledger.stats.QueueStats`, one row per queue and state, kept up to
date incrementally from the events): each refresh first lets it catch up, then
reads it. The reads are bounded:

- job counts: the totals per state (one pass over ``jobledger_queue_stats``,
  whose size is queues x states, not jobs), and the rows of the queues that have
  a label of their own (primary-key look-ups); the rest is ``queue="other"``;
- catch-up lag, per checkpoint (at most :data:`MAX_PROJECTIONS`): the events it
  could apply but has not yet, counted up to :data:`LAG_COUNT_CAP` through the
  same indexed query the runner reads them with, and the age of the oldest of
  them by the database clock; on PostgreSQL also the events held back behind a
  transaction still open (:meth:`~jobledger.catchup.CatchUp.holdup`'s count, an
  index range scan from the horizon, so as long as that transaction stays open).

Prometheus scrapes the last refresh (:class:`LedgerGauges` is a collector), so a
scrape never waits for the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from .. import bounds
from ..catchup import CatchUp
from ..database import translated_errors
from ..errors import LedgerError
from ..lifecycle import State
from ..schema import checkpoints, queue_stats
from ..stats import QueueStats
from ..storage import backend_for
from .labels import OTHER, BoundedLabels

if TYPE_CHECKING:
    from ..ledger import Ledger

log = logging.getLogger("jobledger.ops")

#: Seconds between refreshes, by default.
DEFAULT_INTERVAL = 15.0
#: Pending events counted per projection at most; the gauge says this many when behind more.
LAG_COUNT_CAP = 10_000
#: Catch-up projections reported at most (by name).
MAX_PROJECTIONS = 20
#: Events applied per catch-up transaction while refreshing the queue statistics.
STATS_BATCH = 500


@dataclass(frozen=True)
class Snapshot:
    """What one refresh read."""

    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue label, state)
    lag_events: dict[str, int] = field(default_factory=dict)  # projection -> pending events
    lag_seconds: dict[str, float] = field(default_factory=dict)  # projection -> oldest's age
    held_back: dict[str, int] = field(default_factory=dict)  # projection -> events held back
    refreshed_at: float | None = None  # Unix time


class LedgerGauges(Collector):
    """A collector of per-queue job counts and catch-up lag, refreshed in a thread.

    Registered in ``registry`` at once (default: ``prometheus_client``'s global
    one); :meth:`start` begins refreshing every ``interval`` seconds, :meth:`stop`
    ends it. :meth:`refresh` does one refresh in the caller's thread.
    """

    def __init__(
        self,
        source: Ledger | Engine,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        queues: BoundedLabels | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.interval = bounds.seconds(interval, "interval")
        self.engine: Engine = source if isinstance(source, Engine) else source.engine
        self.queues = queues if queues is not None else BoundedLabels()
        self._backend = backend_for(self.engine)
        self._stats = CatchUp(self.engine, QueueStats(), batch_size=STATS_BATCH)
        self._snapshot = Snapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = Counter(
            "jobledger_gauges_refresh_errors",
            "Refreshes of job counts and catch-up lag that failed (the last values stay).",
            registry=registry,
        )
        if registry is not None:
            registry.register(self)

    # -- refreshing ----------------------------------------------------------------------

    def start(self) -> LedgerGauges:
        """Refresh now and then every ``interval`` seconds, in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="jobledger-gauges", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop refreshing (after the refresh under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except LedgerError as exc:  # the database is down: keep the last values, retry
                self.errors.inc()
                log.error("could not refresh job counts and catch-up lag: %s", exc)
            except Exception:  # a bug here must not end the refreshes, nor the projector
                self.errors.inc()
                log.exception("could not refresh job counts and catch-up lag")
            self._stop.wait(self.interval)

    def refresh(self) -> Snapshot:
        """Catch the queue statistics up, read counts and lag; the snapshot scrapes see."""
        while not self._stop.is_set() and self._stats.run_batch() == STATS_BATCH:
            pass  # a first catch-up over a big ledger takes many batches; stop() ends it
        with translated_errors(self.engine), self.engine.connect() as conn:
            jobs = self._job_counts(conn)
            lag_events, lag_seconds, held_back = self._lag(conn)
        self._snapshot = Snapshot(jobs, lag_events, lag_seconds, held_back, time.time())
        return self._snapshot

    def _job_counts(self, conn: Connection) -> dict[tuple[str, str], int]:
        totals = dict(
            conn.execute(
                select(queue_stats.c.state, func.sum(queue_stats.c.jobs)).group_by(
                    queue_stats.c.state
                )
            ).all()
        )
        if not self.queues.full:  # admit queues up to the cap, by name
            newcomers = select(queue_stats.c.queue).distinct().order_by(queue_stats.c.queue)
            for (queue,) in conn.execute(newcomers.limit(self.queues.limit)):
                self.queues(queue)
        kept = sorted(self.queues.kept)
        counts: dict[tuple[str, str], int] = {}
        for start in range(0, len(kept), 500):
            rows = conn.execute(
                select(queue_stats.c.queue, queue_stats.c.state, queue_stats.c.jobs).where(
                    queue_stats.c.queue.in_(kept[start : start + 500])
                )
            )
            for queue, state, jobs in rows:
                counts[(queue, state)] = int(jobs)
        for state in State:
            rest = int(totals.get(state.value) or 0) - sum(
                n for (_, s), n in counts.items() if s == state.value
            )
            if rest or self.queues.full:  # no "other" series until a queue is left out
                counts[(OTHER, state.value)] = counts.get((OTHER, state.value), 0) + rest
        return counts

    def _lag(self, conn: Connection) -> tuple[dict[str, int], dict[str, float], dict[str, int]]:
        now: datetime = conn.execute(select(self._backend.clock())).scalar_one()
        pending = self._backend.pending_events_query().subquery()
        count = select(func.count(), func.min(pending.c.recorded_at))
        held_back_query = self._backend.held_back_query()  # None where nothing waits (SQLite)
        names = select(checkpoints.c.name, checkpoints.c.position, checkpoints.c.tx_id)
        events: dict[str, int] = {}
        seconds: dict[str, float] = {}
        held_back: dict[str, int] = {}
        for name, position, tx_id in conn.execute(
            names.order_by(checkpoints.c.name).limit(MAX_PROJECTIONS)
        ):
            params = {"position": position, "tx_id": tx_id, "limit": LAG_COUNT_CAP}
            waiting, oldest = conn.execute(count, params).one()
            events[name] = int(waiting)
            seconds[name] = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
            if held_back_query is not None:
                held_back[name] = int(conn.execute(held_back_query, params).scalar_one())
        return events, seconds, held_back

    # -- scraping ------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._snapshot))

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Snapshot()))

    @staticmethod
    def _families(snapshot: Snapshot) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "jobledger_jobs",
            "Jobs in each state, per queue (queue statistics projection; see its refresh time).",
            labels=["queue", "state"],
        )
        for (queue, state), count in sorted(snapshot.jobs.items()):
            jobs.add_metric([queue, state], count)
        yield jobs
        yield _per_projection(
            "jobledger_catchup_lag_events",
            f"Events a catch-up projection has not applied yet (counted up to {LAG_COUNT_CAP}).",
            snapshot.lag_events,
        )
        yield _per_projection(
            "jobledger_catchup_lag_seconds",
            "Age of the oldest event a catch-up projection has not applied yet (0: none).",
            snapshot.lag_seconds,
        )
        yield _per_projection(
            "jobledger_catchup_held_back_events",
            "Committed events a catch-up projection cannot apply yet: they wait for an older "
            "transaction still open (PostgreSQL only).",
            snapshot.held_back,
        )
        refreshed = GaugeMetricFamily(
            "jobledger_gauges_refreshed_timestamp_seconds",
            "Unix time the job counts and catch-up lag were last read.",
        )
        if snapshot.refreshed_at is not None:
            refreshed.add_metric([], snapshot.refreshed_at)
        yield refreshed


def _per_projection(name: str, documentation: str, values: Mapping[str, float]) -> Metric:
    """A gauge family with one sample per catch-up projection, in name order."""
    family = GaugeMetricFamily(name, documentation, labels=["projection"])
    for projection, value in sorted(values.items()):
        family.add_metric([projection], value)
    return family
