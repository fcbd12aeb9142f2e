"""Helpers shared by the suite's test files (fixtures stay in the conftest files)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from jobledger.identity import new_identity
from jobledger.liveness import ProcessInfo


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``condition()`` held, polling every ``step``; fails after ``timeout``.

    What a test waits on instead of sleeping "long enough": it goes on as soon as
    the thing happened, and says so when it never did.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def info(identity: str | None = None, **changes: Any) -> ProcessInfo:
    """A liveness record for ``identity`` (a new one by default), with ``changes`` applied."""
    identity = identity or new_identity()
    host, pid, _ = identity.split(":")
    values: dict[str, Any] = {
        "host": host,
        "pid": int(pid),
        "started_at": datetime.now(timezone.utc),
    }
    values.update(changes)
    return ProcessInfo(identity=identity, **values)
