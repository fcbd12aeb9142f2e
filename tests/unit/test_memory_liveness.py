"""The in-memory liveness backend on a manual clock: the contract, and what it acts out."""

from __future__ import annotations

import pytest

from jobledger.errors import ConfigurationError, LivenessUnavailable
from jobledger.liveness import Incarnation, Liveness, MemoryLiveness
from jobledger.testing import ManualClock
from tests.helpers import info

TTL = 10.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def liveness(clock: ManualClock) -> MemoryLiveness:
    return MemoryLiveness(ttl=TTL, clock=clock)


def test_it_is_a_liveness_backend(liveness: MemoryLiveness) -> None:
    assert isinstance(liveness, Liveness)


def test_register_refresh_lapse(liveness: MemoryLiveness, clock: ManualClock) -> None:
    me = info(busy=2)
    liveness.register(me)
    assert liveness.remaining([me.identity]) == {me.identity: TTL}
    clock.advance(6)
    assert liveness.refresh(info(me.identity, quiet=True)) is True
    clock.advance(6)  # 12 s after registering, 6 s after the refresh
    assert liveness.remaining([me.identity]) == {me.identity: 4.0}
    (listed,) = liveness.processes()
    assert (listed.identity, listed.busy, listed.quiet) == (me.identity, 0, True)
    clock.advance(4)  # the record's time is up exactly now
    assert liveness.alive([me.identity]) == {me.identity: False}
    assert liveness.refresh(me) is False  # a lapsed process does not quietly revive
    assert liveness.processes() == []
    assert liveness.known() == {me.identity}  # known until forgotten


def test_unregister_and_forget(liveness: MemoryLiveness, clock: ManualClock) -> None:
    gone, lapsed, live = info(), info(), info()
    for p in (gone, lapsed, live):
        liveness.register(p)
    liveness.unregister(gone.identity)
    assert liveness.known() == {lapsed.identity, live.identity}
    clock.advance(TTL)
    liveness.register(live)
    liveness.forget([lapsed.identity, live.identity])  # as Redis: the registry only
    assert liveness.known() == set()
    assert liveness.alive([live.identity, lapsed.identity]) == {
        live.identity: True,
        lapsed.identity: False,
    }


def test_kill_lapses_a_record_at_once(liveness: MemoryLiveness) -> None:
    victim, bystander = info(), info()
    liveness.register(victim)
    liveness.register(bystander)
    liveness.kill(victim.identity)
    assert liveness.alive([victim.identity, bystander.identity]) == {
        victim.identity: False,
        bystander.identity: True,
    }
    assert liveness.known() == {victim.identity, bystander.identity}
    assert liveness.refresh(victim) is False


def test_incarnation_is_stable_and_old_by_default(
    liveness: MemoryLiveness, clock: ManualClock
) -> None:
    first = liveness.incarnation()
    clock.advance(5)
    second = liveness.incarnation()
    assert first.same_life(second)
    assert (first.age, second.age) == (3600.0, 3605.0)


def test_a_young_backend_says_how_young(clock: ManualClock) -> None:
    young = MemoryLiveness(ttl=TTL, clock=clock, age=0)
    clock.advance(2.5)
    assert young.incarnation().age == 2.5


@pytest.mark.parametrize("event", ["restart", "flush"])
def test_restart_and_flush_lose_everything_and_begin_a_new_life(
    liveness: MemoryLiveness, clock: ManualClock, event: str
) -> None:
    me = info()
    liveness.register(me)
    before = liveness.incarnation()
    getattr(liveness, event)()
    assert liveness.alive([me.identity]) == {me.identity: False}
    assert liveness.known() == set()
    after = liveness.incarnation()
    assert not before.same_life(after)
    assert after.age == 0.0
    assert (after.run_id != before.run_id) is (event == "restart")
    clock.advance(3)
    assert liveness.incarnation() == Incarnation(after.run_id, after.epoch, 3.0)


def test_a_backend_that_is_down_answers_nothing(liveness: MemoryLiveness) -> None:
    me = info()
    liveness.register(me)
    liveness.down = True
    calls = [
        lambda: liveness.register(me),
        lambda: liveness.refresh(me),
        lambda: liveness.alive([me.identity]),
        liveness.known,
        liveness.incarnation,
    ]
    for call in calls:
        with pytest.raises(LivenessUnavailable, match="down"):
            call()
    liveness.down = False
    assert liveness.alive([me.identity]) == {me.identity: True}


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError):
        MemoryLiveness(ttl=0)
    with pytest.raises(ConfigurationError):
        MemoryLiveness(age=-1)


def test_the_manual_clock_moves_only_forward() -> None:
    clock = ManualClock(start=5.0)
    clock.advance(1.5)
    assert clock() == 6.5
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1)
