"""Numeric settings, checked once for the API and the CLI: finite and in range.

A NaN passes every ``< 0`` test and an infinity passes every ``> 0`` test, and
either one fails only later, deep in a loop (``timedelta(seconds=nan)``), after
a projector has run for a while. So durations and counts are checked where they
are given and refused with :class:`~jobledger.errors.ConfigurationError`.
"""

from __future__ import annotations

import math

from .errors import ConfigurationError

#: The longest duration any setting may have (TTLs, grace periods, intervals, timeouts).
MAX_SECONDS = 365 * 24 * 3600.0


def seconds(value: float, what: str, *, zero: bool = False) -> float:
    """``value`` as seconds: a finite number above zero (or zero, if allowed), at most a year."""
    lowest = ">= 0" if zero else "> 0"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
        or value > MAX_SECONDS
    ):
        raise ConfigurationError(
            f"{what} must be a number of seconds {lowest} and at most {MAX_SECONDS:.0f} "
            f"(a year), not {value!r}"
        )
    return float(value)


def count(value: int, what: str, minimum: int = 1) -> int:
    """``value`` as a count: an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{what} must be an integer >= {minimum}, not {value!r}")
    return value
