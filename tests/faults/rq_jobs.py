"""Job functions for the RQ integration tests (imported by the RQ work horse)."""

from __future__ import annotations

import time


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def quick(value: int) -> int:
    return value * 2


def broken() -> None:
    raise RuntimeError("this job always fails")
