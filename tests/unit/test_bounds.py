"""Durations and counts are refused where they are given, not at a projector's first orphan."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from jobledger import (
    Ledger,
    RecoveryPolicy,
    RecoveryProjector,
    RedisLiveness,
    SqlLiveness,
    Worker,
)
from jobledger.bounds import MAX_SECONDS, count, seconds
from jobledger.errors import ConfigurationError

BAD_DURATIONS = [math.nan, math.inf, -math.inf, -1.0, MAX_SECONDS * 2, True, "5"]


@pytest.mark.parametrize("value", [*BAD_DURATIONS, 0, 0.0])
def test_a_positive_duration_is_finite_above_zero_and_at_most_a_year(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl must be a number of seconds > 0"):
        seconds(value, "ttl")


@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_a_non_negative_duration_may_be_zero_but_nothing_else_odd(value: Any) -> None:
    assert seconds(0, "grace", zero=True) == 0.0
    with pytest.raises(ConfigurationError, match="grace must be a number of seconds >= 0"):
        seconds(value, "grace", zero=True)


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "3"])
def test_a_count_is_an_integer_of_at_least_one(value: Any) -> None:
    assert count(3, "max_attempts") == 3
    with pytest.raises(ConfigurationError, match="max_attempts must be an integer >= 1"):
        count(value, "max_attempts")


@pytest.mark.parametrize(
    "make",
    [
        lambda: RecoveryPolicy(max_attempts=0),
        lambda: RecoveryPolicy(max_attempts_by_queue={"mail": 0}),
        lambda: RecoveryPolicy(heartbeat_timeout=math.nan),
        lambda: RecoveryPolicy(heartbeat_timeout=-1),
        lambda: RecoveryPolicy(heartbeat_timeout_by_queue={"mail": math.inf}),
        lambda: SqlLiveness("sqlite://", ttl=math.nan),
        lambda: SqlLiveness("sqlite://", ttl=math.inf),
        lambda: RedisLiveness("redis://127.0.0.1:1/0", ttl=math.nan),
        lambda: Worker(Ledger("sqlite://"), SqlLiveness("sqlite://", ttl=1), grace=math.nan),
        lambda: Worker(Ledger("sqlite://"), SqlLiveness("sqlite://", ttl=1), grace=-1),
        lambda: Worker(Ledger("sqlite://"), SqlLiveness("sqlite://", ttl=1), stop_timeout=math.inf),
    ],
)
def test_constructors_refuse_what_would_fail_later(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):
        make()


@pytest.mark.parametrize(
    "options",
    [
        {"interval": math.nan},
        {"interval": math.inf},
        {"interval": 0},
        {"grace": math.nan},
        {"grace": math.inf},
        {"grace": -1},
    ],
)
def test_the_projector_refuses_what_would_fail_at_its_first_orphan(options: Any) -> None:
    with Ledger("sqlite://") as ledger:
        liveness = SqlLiveness(ledger, ttl=1)
        with pytest.raises(ConfigurationError):
            RecoveryProjector(ledger, liveness, **options)
