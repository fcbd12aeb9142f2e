"""Helpers shared by the suite's test files (fixtures stay in the conftest files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from sqlalchemy import text

from jobledger.database import engine_for
from jobledger.identity import new_identity
from jobledger.liveness import ProcessInfo

if TYPE_CHECKING:
    from jobledger.redelivery import Redeliverer

#: The ``jobledger`` command of the environment running the tests.
JOBLEDGER = str(Path(sys.executable).parent / "jobledger")

#: Any value JSON can carry (no NaN or infinity, no NUL or lone surrogate in text).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


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


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``jobledger ARGS...`` in a subprocess, its output captured; never raises on failure."""
    return subprocess.run(
        [JOBLEDGER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def terminate_cleanly(process: subprocess.Popen[str]) -> str:
    """SIGTERM, wait, and its stderr; fails unless it exited cleanly."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def marker_lines(marker: Path) -> list[str]:
    """What a test job wrote to its marker file (``start``, ``done``), none if it never ran."""
    return marker.read_text().split() if marker.exists() else []


def run_settled(redeliverer: Redeliverer, timeout: float = 15.0) -> None:
    """Deliver until no committed event is held back. On PostgreSQL a transaction left open
    anywhere on the (shared) server holds the catch-up horizon back for a while."""
    deadline = time.monotonic() + timeout
    redeliverer.run_once()
    while redeliverer.catchup.holdup() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
        redeliverer.run_once()


def terminate_backends(server_url: str, database: str | None) -> None:
    """End every session on ``database`` (a scratch database of the test's own) but ours."""
    admin = engine_for(server_url)
    try:
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
    finally:
        admin.dispose()
