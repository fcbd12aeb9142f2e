"""Every decision of the recovery projector, on a manual clock: no TTL is waited out.

The projector and an in-memory liveness backend share one ManualClock; the
ledger is a real SQLite file. Claim ages (the grace period, the heartbeat
timeout) are read on the database's clock, as in production, so a test that
needs an old claim backdates the job's status row instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from jobledger import Ledger, RecoveryPolicy, RecoveryProjector
from jobledger.errors import LivenessUnavailable
from jobledger.identity import new_identity
from jobledger.liveness import MemoryLiveness
from jobledger.schema import jobs
from jobledger.testing import ManualClock
from tests.helpers import info

TTL = 10.0
RECOVERED = ["enqueued", "claimed", "abandoned", "requeued"]


class InterferingLiveness(MemoryLiveness):
    """Runs ``before_second_look`` just before it answers the projector's second look."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_second_look: Callable[[], object] = lambda: None

    def alive(self, identities: Collection[str]) -> dict[str, bool]:
        self.before_second_look()
        return super().alive(identities)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def liveness(clock: ManualClock) -> InterferingLiveness:
    return InterferingLiveness(ttl=TTL, clock=clock)


def projector(ledger: Ledger, liveness: MemoryLiveness, **options: Any) -> RecoveryProjector:
    """A projector on the backend's clock, with no grace unless told otherwise."""
    options.setdefault("grace", 0)
    return RecoveryProjector(ledger, liveness, clock=liveness.clock, **options)


def held(ledger: Ledger, liveness: MemoryLiveness, *job_ids: str, queue: str = "default") -> str:
    """A registered process that claimed ``job_ids`` (enqueued for it); its identity."""
    holder = info()
    liveness.register(holder)
    ledger.enqueue_many(job_ids, queue=queue)
    for job_id in job_ids:
        ledger.claim(job_id, holder.identity)
    return holder.identity


def backdate(ledger: Ledger, job_id: str, seconds: float) -> None:
    """Make the job's claim (and last heartbeat) ``seconds`` older, by the database clock."""
    status = ledger.status(job_id)
    assert status.claimed_at is not None
    earlier = timedelta(seconds=seconds)
    beat = None if status.heartbeat_at is None else status.heartbeat_at - earlier
    with ledger.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.job_id == job_id)
            .values(claimed_at=status.claimed_at - earlier, heartbeat_at=beat)
        )


def types(ledger: Ledger, job_id: str) -> list[str]:
    return [e.type for e in ledger.history(job_id)]


def states(ledger: Ledger) -> dict[str, str]:
    return {s.job_id: s.state for s in ledger.jobs()}


# -- presumed dead ------------------------------------------------------------------------


def test_a_lapsed_holder_is_abandoned_once_its_ttl_ran_out(
    sqlite_ledger: Ledger, liveness: MemoryLiveness, clock: ManualClock
) -> None:
    holder = held(sqlite_ledger, liveness, "a", "b")
    recovery = projector(sqlite_ledger, liveness)
    assert recovery.run_once() == []
    clock.advance(TTL - 0.5)  # no refresh since: half a second left
    assert recovery.run_once() == []
    clock.advance(2.5)  # lapsed two seconds ago
    done = sorted(recovery.run_once(), key=lambda r: r.job_id)
    reason = f"holder {holder} is not alive"
    assert [(r.job_id, r.holder, r.reason, r.attempt, r.requeued, r.latency) for r in done] == [
        ("a", holder, reason, 1, True, 2.0),
        ("b", holder, reason, 1, True, 2.0),
    ]
    assert types(sqlite_ledger, "a") == RECOVERED
    abandoned = sqlite_ledger.history("a")[2]
    assert (abandoned.process, abandoned.data["holder"]) == (recovery.identity, holder)
    counters = recovery.counters
    assert (counters.sweeps, counters.abandoned, counters.requeued) == (3, 2, 2)
    assert (counters.left_abandoned, counters.paused_sweeps, counters.lost_races) == (0, 0, 0)
    assert list(counters.latencies) == [2.0, 2.0]
    assert recovery.run_once() == []
    assert holder not in liveness.known()  # a lapsed holder of nothing is forgotten


def test_a_refreshing_holder_is_never_abandoned(
    sqlite_ledger: Ledger, liveness: MemoryLiveness, clock: ManualClock
) -> None:
    holder = held(sqlite_ledger, liveness, "j")
    recovery = projector(sqlite_ledger, liveness)
    for _ in range(20):  # 18 TTLs
        clock.advance(0.9 * TTL)
        assert liveness.refresh(info(holder))
        assert recovery.run_once() == []
    assert states(sqlite_ledger) == {"j": "claimed"}
    assert recovery.counters.abandoned == 0


def test_grace_protects_young_claims_of_the_dead(
    sqlite_ledger: Ledger, liveness: MemoryLiveness
) -> None:
    sqlite_ledger.enqueue("j")
    sqlite_ledger.claim("j", new_identity())  # a holder that never registered: dead
    recovery = projector(sqlite_ledger, liveness, grace=60)
    assert recovery.run_once() == []
    backdate(sqlite_ledger, "j", 50)
    assert recovery.run_once() == []
    assert states(sqlite_ledger) == {"j": "claimed"}
    backdate(sqlite_ledger, "j", 10)
    assert [r.job_id for r in recovery.run_once()] == ["j"]
    assert types(sqlite_ledger, "j") == RECOVERED


def test_the_grace_is_one_ttl_by_default(sqlite_ledger: Ledger, liveness: MemoryLiveness) -> None:
    assert RecoveryProjector(sqlite_ledger, liveness).grace == TTL


def test_a_lapsed_process_holding_nothing_is_forgotten(
    sqlite_ledger: Ledger, liveness: MemoryLiveness, clock: ManualClock
) -> None:
    idle, busy = info(), info()
    liveness.register(idle)
    clock.advance(TTL / 2)
    liveness.register(busy)
    recovery = projector(sqlite_ledger, liveness)
    clock.advance(TTL / 2)  # idle lapsed just now, busy has half its TTL
    assert recovery.run_once() == []
    assert liveness.known() == {busy.identity}


# -- the second look ----------------------------------------------------------------------


def test_a_holder_back_by_the_second_look_keeps_its_jobs(
    sqlite_ledger: Ledger, liveness: InterferingLiveness, caplog: pytest.LogCaptureFixture
) -> None:
    holder = held(sqlite_ledger, liveness, "j")
    liveness.kill(holder)
    liveness.before_second_look = lambda: liveness.register(info(holder))
    recovery = projector(sqlite_ledger, liveness)
    with caplog.at_level("INFO", "jobledger.recovery"):
        assert recovery.run_once() == []
    assert f"holder {holder} is back; leaving 'j' alone" in caplog.text
    assert types(sqlite_ledger, "j") == ["enqueued", "claimed"]
    assert recovery.counters.abandoned == 0


def test_a_restart_before_the_second_look_abandons_nothing(
    sqlite_ledger: Ledger, liveness: InterferingLiveness
) -> None:
    holder = held(sqlite_ledger, liveness, "j")
    liveness.kill(holder)
    liveness.before_second_look = liveness.restart
    recovery = projector(sqlite_ledger, liveness)
    assert recovery.run_once() == []
    assert types(sqlite_ledger, "j") == ["enqueued", "claimed"]
    liveness.before_second_look = lambda: None
    assert recovery.run_once() == []  # and the next sweep waits one TTL
    assert recovery.counters.paused_sweeps == 1


def test_a_complete_before_the_abandon_wins_the_race(
    sqlite_ledger: Ledger, liveness: InterferingLiveness
) -> None:
    holder = info()
    sqlite_ledger.enqueue("j")
    claim = sqlite_ledger.claim("j", holder.identity)  # never registered: dead to the projector
    liveness.before_second_look = lambda: sqlite_ledger.complete(claim)
    recovery = projector(sqlite_ledger, liveness)
    assert recovery.run_once() == []
    assert types(sqlite_ledger, "j") == ["enqueued", "claimed", "completed"]
    assert (recovery.counters.lost_races, recovery.counters.abandoned) == (1, 0)


# -- pauses: a backend that forgot, a mass death --------------------------------------------


@pytest.mark.parametrize("event", ["restart", "flush"])
def test_a_restart_or_flush_pauses_abandonment_for_one_ttl(
    sqlite_ledger: Ledger, liveness: MemoryLiveness, clock: ManualClock, event: str
) -> None:
    held(sqlite_ledger, liveness, "j")
    recovery = projector(sqlite_ledger, liveness)
    assert recovery.run_once() == []
    getattr(liveness, event)()  # the holder's record is gone, and it never comes back
    assert recovery.run_once() == []
    clock.advance(TTL - 0.5)
    assert recovery.run_once() == []
    assert recovery.counters.paused_sweeps == 2
    assert states(sqlite_ledger) == {"j": "claimed"}
    clock.advance(0.5)  # one TTL: a live holder would have re-registered by now
    assert [r.job_id for r in recovery.run_once()] == ["j"]
    assert recovery.counters.paused_sweeps == 2


def test_a_holder_that_re_registers_after_a_restart_keeps_its_jobs(
    sqlite_ledger: Ledger, liveness: MemoryLiveness, clock: ManualClock
) -> None:
    holder = held(sqlite_ledger, liveness, "j")
    recovery = projector(sqlite_ledger, liveness)
    assert recovery.run_once() == []
    liveness.restart()
    clock.advance(TTL / 3)
    assert liveness.refresh(info(holder)) is False  # its refresh finds the record gone...
    liveness.register(info(holder))  # ...and registers again, as a worker does
    for _ in range(6):
        assert recovery.run_once() == []
        clock.advance(TTL / 3)
        liveness.refresh(info(holder))
    assert types(sqlite_ledger, "j") == ["enqueued", "claimed"]


def test_a_young_backend_pauses_a_new_projector(sqlite_ledger: Ledger, clock: ManualClock) -> None:
    fresh = MemoryLiveness(ttl=TTL, clock=clock, age=0)
    sqlite_ledger.enqueue("j")
    sqlite_ledger.claim("j", new_identity())  # a holder with no record at all
    recovery = projector(sqlite_ledger, fresh)
    assert recovery.run_once() == []
    clock.advance(TTL - 0.5)
    assert recovery.run_once() == []
    assert recovery.counters.paused_sweeps == 2
    clock.advance(0.5)
    assert [r.job_id for r in recovery.run_once()] == ["j"]


@pytest.mark.parametrize(
    ("processes", "killed", "paused"),
    [(4, 3, True), (4, 2, False), (10, 6, True), (10, 5, False)],
    ids=["3-of-4", "2-of-4-below-minimum", "6-of-10", "5-of-10-not-over-half"],
)
def test_mass_death_pauses_abandonment_for_one_ttl(
    sqlite_ledger: Ledger,
    liveness: MemoryLiveness,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    processes: int,
    killed: int,
    paused: bool,
) -> None:
    holders = [held(sqlite_ledger, liveness, f"job-{n}") for n in range(processes)]
    recovery = projector(sqlite_ledger, liveness, mass_death_share=0.5, mass_death_minimum=3)
    assert recovery.run_once() == []  # all alive: the baseline
    liveness.kill(*holders[:killed])
    victims = {f"job-{n}" for n in range(killed)}
    with caplog.at_level("WARNING"):
        first = {r.job_id for r in recovery.run_once()}
    if not paused:
        assert first == victims
        assert recovery.counters.paused_sweeps == 0
        return
    assert first == set()
    assert f"{killed} of {processes} live processes vanished in one sweep" in caplog.text
    clock.advance(TTL - 0.5)
    for survivor in holders[killed:]:
        assert liveness.refresh(info(survivor))
    assert recovery.run_once() == []
    assert set(states(sqlite_ledger).values()) == {"claimed"}
    assert recovery.counters.paused_sweeps == 2
    clock.advance(0.5)  # after one full TTL they are still gone: now they count as dead
    assert {r.job_id for r in recovery.run_once()} == victims


def test_graceful_departures_are_not_a_mass_death(
    sqlite_ledger: Ledger, liveness: MemoryLiveness
) -> None:
    holders = [held(sqlite_ledger, liveness, f"job-{n}") for n in range(4)]
    recovery = projector(sqlite_ledger, liveness, mass_death_share=0.5, mass_death_minimum=3)
    assert recovery.run_once() == []
    for holder in holders:
        liveness.unregister(holder)  # left without finishing: their jobs are orphans at once
    assert len(recovery.run_once()) == 4
    assert recovery.counters.paused_sweeps == 0


def test_an_unavailable_backend_abandons_nothing(
    sqlite_ledger: Ledger, liveness: MemoryLiveness
) -> None:
    sqlite_ledger.enqueue("j")
    sqlite_ledger.claim("j", new_identity())
    recovery = projector(sqlite_ledger, liveness)
    liveness.down = True
    with pytest.raises(LivenessUnavailable):
        recovery.run_once()
    assert (recovery.counters.sweeps, recovery.counters.unavailable_sweeps) == (1, 1)
    assert states(sqlite_ledger) == {"j": "claimed"}
    liveness.down = False
    assert [r.job_id for r in recovery.run_once()] == ["j"]


# -- hung jobs of live holders ------------------------------------------------------------


def test_a_hung_job_of_a_live_holder_is_abandoned_after_its_queue_timeout(
    sqlite_ledger: Ledger, liveness: MemoryLiveness
) -> None:
    ledger = sqlite_ledger
    holder = held(ledger, liveness, "hung", "young", queue="reports")
    ledger.enqueue("ticking", queue="reports")
    ticking = ledger.claim("ticking", holder)
    held_elsewhere = held(ledger, liveness, "other", queue="mail")
    backdate(ledger, "hung", 30)
    backdate(ledger, "young", 29)
    backdate(ledger, "ticking", 3600)
    assert ledger.heartbeat(ticking)  # written: the claim is old, its last beat is now
    backdate(ledger, "other", 3600)
    policy = RecoveryPolicy(heartbeat_timeout_by_queue={"reports": 30})
    recovery = projector(ledger, liveness, policy=policy)
    (done,) = recovery.run_once()
    assert (done.job_id, done.holder, done.reason, done.latency) == (
        "hung",
        holder,
        "heartbeat-timeout",
        None,
    )
    assert types(ledger, "hung") == RECOVERED
    assert states(ledger) == {
        "hung": "enqueued",
        "young": "claimed",
        "ticking": "claimed",
        "other": "claimed",
    }
    assert held_elsewhere in liveness.known()


def test_without_a_timeout_a_live_holder_keeps_its_jobs_however_old(
    sqlite_ledger: Ledger, liveness: MemoryLiveness
) -> None:
    held(sqlite_ledger, liveness, "old")
    backdate(sqlite_ledger, "old", 365 * 24 * 3600)
    assert projector(sqlite_ledger, liveness).run_once() == []


# -- what happens to a recovered job: the policy -------------------------------------------


def test_the_attempt_cap_leaves_poison_pills_abandoned(
    sqlite_ledger: Ledger, liveness: MemoryLiveness
) -> None:
    ledger = sqlite_ledger
    ledger.enqueue("poison", queue="risky")
    ledger.enqueue("fine", queue="safe")
    policy = RecoveryPolicy(max_attempts=5, max_attempts_by_queue={"risky": 2})
    recovery = projector(ledger, liveness, policy=policy)
    for attempt in (1, 2):
        for job_id in ("poison", "fine"):
            ledger.claim(job_id, new_identity())  # holders that never register: dead
        done = sorted(recovery.run_once(), key=lambda r: r.job_id)
        assert [(r.job_id, r.attempt, r.requeued) for r in done] == [
            ("fine", attempt, True),
            ("poison", attempt, attempt < 2),
        ]
    assert types(ledger, "poison") == [*RECOVERED, "claimed", "abandoned"]
    assert types(ledger, "fine") == [*RECOVERED, "claimed", "abandoned", "requeued"]
    last = ledger.history("poison")[-1]
    assert last.data["reason"] == f"holder {last.data['holder']} is not alive"
    counters = recovery.counters
    assert (counters.abandoned, counters.requeued, counters.left_abandoned) == (4, 3, 1)
