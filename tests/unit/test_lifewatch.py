"""LifeWatch on a manual clock: when a missing liveness record may be read as a death."""

from __future__ import annotations

import pytest

from jobledger.liveness.base import Incarnation
from jobledger.liveness.trust import LifeWatch
from jobledger.testing import ManualClock

TTL = 10.0
SETTLED = Incarnation("run-1", "epoch-1", age=3600.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_a_settled_backend_is_trusted_from_the_first_look(clock: ManualClock) -> None:
    watch = LifeWatch(TTL, clock=clock)
    assert watch.trusts(SETTLED)
    assert not watch.doubting


def test_a_young_backend_is_doubted_until_one_ttl_after_its_birth(clock: ManualClock) -> None:
    watch = LifeWatch(TTL, clock=clock)
    assert not watch.trusts(Incarnation("run-1", "epoch-1", age=4.0))
    clock.advance(5.5)
    assert not watch.trusts(Incarnation("run-1", "epoch-1", age=9.5))
    clock.advance(0.5)
    assert watch.trusts(Incarnation("run-1", "epoch-1", age=10.0))


def test_a_backend_without_age_is_trusted_at_once(clock: ManualClock) -> None:
    assert LifeWatch(TTL, clock=clock).trusts(Incarnation(None, None, age=None))


@pytest.mark.parametrize(
    "changed",
    [Incarnation("run-2", "epoch-1", 3600.0), Incarnation("run-1", "epoch-2", 0.0)],
    ids=["restart-or-failover", "flush"],
)
def test_a_change_of_life_brings_one_ttl_of_doubt(
    clock: ManualClock, changed: Incarnation, caplog: pytest.LogCaptureFixture
) -> None:
    watch = LifeWatch(TTL, "pausing the test", clock=clock)
    assert watch.trusts(SETTLED)
    with caplog.at_level("WARNING", "jobledger.liveness"):
        assert not watch.trusts(changed)
    assert "pausing the test for 10.0s: the liveness backend restarted" in caplog.text
    clock.advance(TTL - 0.5)
    assert not watch.trusts(changed)
    assert watch.doubting
    clock.advance(0.5)
    assert watch.trusts(changed)


def test_doubt_extends_never_shortens(clock: ManualClock) -> None:
    watch = LifeWatch(TTL, clock=clock)
    watch.doubt("long", 20.0)
    watch.doubt("short", 1.0)
    clock.advance(19.5)
    assert watch.doubting
    clock.advance(0.5)
    assert not watch.doubting
