"""Job functions for the RQ integration tests (imported by the RQ work horse)."""

from __future__ import annotations

import os
import signal
import time


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def quick(value: int) -> int:
    return value * 2


def broken() -> None:
    raise RuntimeError("this job always fails")


def started(marker: str) -> bool:
    """Write ``start`` to ``marker``; whether this is the first run that did."""
    with open(marker, "a+") as file:
        file.seek(0)
        first = "start" not in file.read()
        file.write("start\n")
    return first


def counted(marker: str, first_run_seconds: float) -> str:
    """Write ``start`` and ``done`` lines to ``marker``; only the first run is slow."""
    if started(marker):
        time.sleep(first_run_seconds)
    with open(marker, "a") as file:
        file.write("done\n")
    return "counted"


def gated(marker: str, gate: str) -> str:
    """Write ``start``, wait (up to a minute) for the file ``gate``, then write ``done``."""
    with open(marker, "a") as file:
        file.write("start\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(marker, "a") as file:
        file.write("done\n")
    return "gated"


def killed() -> None:
    """The horse SIGKILLs itself, as the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)
