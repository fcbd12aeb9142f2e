"""The hooks the projector calls, one per decision, on a manual clock and a real SQLite ledger."""

from __future__ import annotations

from typing import Any

import pytest

from jobledger import Ledger
from jobledger import observers as o
from jobledger.errors import LivenessUnavailable
from jobledger.observers import RecoveryObserver
from jobledger.testing import ManualClock
from tests.helpers import info
from tests.integration.test_recovery_decisions import (
    TTL,
    InterferingLiveness,
    held,
    projector,
)


class Recording(RecoveryObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def sweep_finished(self, outcome: str, seconds: float) -> None:
        self.calls.append(("sweep", outcome))

    def holders_seen(self, alive: int, dead: int) -> None:
        self.calls.append(("holders", alive, dead))

    def orphan_found(self, queue: str) -> None:
        self.calls.append(("orphan", queue))

    def claim_ended(self, queue: str, requeued: bool, latency: float | None) -> None:
        self.calls.append(("ended", queue, requeued, latency))

    def lost_race(self, queue: str) -> None:
        self.calls.append(("lost", queue))

    def taken(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def liveness(clock: ManualClock) -> InterferingLiveness:
    return InterferingLiveness(ttl=TTL, clock=clock)


def test_an_abandon_and_a_lost_race(
    sqlite_ledger: Ledger, liveness: InterferingLiveness, clock: ManualClock
) -> None:
    seen = Recording()
    held(sqlite_ledger, liveness, "a", queue="mail")
    recovery = projector(sqlite_ledger, liveness, observer=seen)
    recovery.run_once()
    assert seen.taken() == [("holders", 1, 0), ("sweep", "ok")]
    clock.advance(TTL + 2)
    recovery.run_once()
    assert seen.taken() == [
        ("holders", 0, 1),
        ("orphan", "mail"),
        ("ended", "mail", True, 2.0),
        ("sweep", "ok"),
    ]
    sqlite_ledger.enqueue("b", queue="reports")
    claim = sqlite_ledger.claim("b", info().identity)  # never registered: dead at once
    liveness.before_second_look = lambda: sqlite_ledger.complete(claim)
    recovery.run_once()
    assert seen.taken() == [
        ("holders", 0, 1),
        ("orphan", "reports"),
        ("lost", "reports"),
        ("sweep", "ok"),
    ]


def test_pauses_name_their_reason(
    sqlite_ledger: Ledger, liveness: InterferingLiveness, clock: ManualClock
) -> None:
    seen = Recording()
    holders = [held(sqlite_ledger, liveness, f"job-{n}") for n in range(4)]
    recovery = projector(sqlite_ledger, liveness, observer=seen, mass_death_minimum=3)
    recovery.run_once()
    liveness.kill(*holders[:3])
    recovery.run_once()
    recovery.run_once()  # the doubt lasts one TTL, and keeps its reason
    assert [c for c in seen.taken() if c[0] == "sweep"] == [
        ("sweep", o.OK),
        ("sweep", o.MASS_DEATH),
        ("sweep", o.MASS_DEATH),
    ]
    clock.advance(TTL)
    liveness.restart()
    recovery.run_once()
    assert seen.taken()[-1] == ("sweep", o.LIVENESS_RESTARTED)
    liveness.down = True
    with pytest.raises(LivenessUnavailable):
        recovery.run_once()
    assert seen.taken() == [("sweep", o.LIVENESS_UNREACHABLE)]
