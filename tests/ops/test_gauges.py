"""Per-queue job counts and catch-up lag, read from a real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from sqlalchemy import Connection

from jobledger import Ledger
from jobledger.catchup import CatchUp, Projection
from jobledger.identity import new_identity
from jobledger.ops import OTHER, BoundedLabels, LedgerGauges
from jobledger.records import Event
from tests.helpers import wait_for


class Idle(Projection):
    name = "idle projection"

    def handle(self, event: Event, connection: Connection) -> None:
        pass


def test_job_counts_per_queue_with_the_rest_as_other(ledger: Ledger) -> None:
    for queue in ("alpha", "beta", "gamma"):
        ledger.enqueue_many([f"{queue}-{n}" for n in range(3)], queue=queue)
    ledger.claim("gamma-0", process=new_identity())
    gauges = LedgerGauges(ledger, CollectorRegistry(), queues=BoundedLabels(2))
    expected = {
        ("alpha", "enqueued"): 3,
        ("beta", "enqueued"): 3,
        (OTHER, "enqueued"): 2,
        (OTHER, "claimed"): 1,
    }

    # On PostgreSQL the counts follow the events once no older transaction on the server
    # (another test's, perhaps) holds them back: catch-up never skips one.
    wait_for(lambda: {k: n for k, n in gauges.refresh().jobs.items() if n} == expected, 20)

    assert gauges.queues.kept == {"alpha", "beta"}  # by name, up to the cap


def test_catch_up_lag_counts_and_ages_what_waits(ledger: Ledger) -> None:
    idle = CatchUp(ledger, Idle())
    idle.checkpoint()  # it exists, at the start
    ledger.enqueue_many([f"job-{n}" for n in range(5)])
    time.sleep(0.2)
    registry = CollectorRegistry()
    gauges = LedgerGauges(ledger, registry)

    first = gauges.refresh()

    assert set(first.lag_events) == {"idle projection", "queue_stats"}
    # Some may wait behind another test's transaction, still open on the shared server.
    wait_for(lambda: gauges.refresh().lag_events == {"idle projection": 5, "queue_stats": 0}, 20)
    snapshot = gauges.refresh()
    assert snapshot.lag_seconds["idle projection"] >= 0.1
    assert snapshot.lag_seconds["queue_stats"] == 0.0
    lag = registry.get_sample_value(
        "jobledger_catchup_lag_events", {"projection": "idle projection"}
    )
    assert lag == 5
    held = registry.get_sample_value(
        "jobledger_catchup_held_back_events", {"projection": "idle projection"}
    )
    assert held == (None if ledger.engine.dialect.name == "sqlite" else 0)
    idle.run_once()
    assert gauges.refresh().lag_events["idle projection"] == 0
