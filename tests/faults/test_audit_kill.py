"""Kill ``jobledger rebuild|verify --workers 2`` mid-run: nothing may be left behind.

The coordinator is killed while its forked workers are reading (SIGKILL, or
SIGTERM). Within two seconds its workers must be gone, the database must have
no session of theirs or the coordinator's (the server saw every connection
close, so the rebuild's lock on ``jobledger_jobs`` is released and the
transactions are rolled back), and an append must go through at once.

The ledger is filled in bulk (``benchmarks/audit_data.py``) with enough events
that the workers run for a few seconds, in a database of this module's own, so
that every other session on it is one the command left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from benchmarks.audit_data import populate
from jobledger import Ledger
from jobledger.database import engine_for
from jobledger.testing import scratch_database

ROOT = Path(__file__).resolve().parents[2]
#: Well above audit.MIN_PARALLEL_EVENTS: two workers take a few seconds over these.
EVENTS = 300_000
WORKERS = ("--workers", "2")
#: From the signal to no worker and no session left.
CLEANUP_SECONDS = 2.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_ledger(postgres_server_url: str) -> Iterator[str]:
    """A database of its own holding EVENTS events (a kill rolls back, so tests share it)."""
    with scratch_database(postgres_server_url, prefix="jobledger_kill") as url:
        text = url.render_as_string(hide_password=False)
        with Ledger(text) as ledger:
            ledger.migrate()
        engine = engine_for(text)
        populate([engine], EVENTS)
        engine.dispose()
        yield text


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _sessions(observer: psycopg.Connection[tuple[object, ...]]) -> list[tuple[int, str, str]]:
    """``(pid, state, query)`` of every session on the database but the observer's."""
    rows = observer.execute(
        "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return [(int(pid), str(state), str(query)) for pid, state, query in rows]  # type: ignore[call-overload]


def _children(parent: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``parent``."""
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return [pid for pid in pids if _alive(pid) and _parent(pid) == parent]


def _parent_and_state(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0]


def _parent(pid: int) -> int | None:
    found = _parent_and_state(pid)
    return None if found is None else found[0]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs still (a zombie waiting for its reaper is dead)."""
    found = _parent_and_state(pid)
    return found is not None and found[1] not in ("Z", "X")


def _until(deadline: float, condition: Callable[[], bool]) -> bool:
    """Whether ``condition()`` holds by ``deadline`` (``time.monotonic()``)."""
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _reading(sessions: list[tuple[int, str, str]]) -> int:
    """Sessions streaming events out (the workers' ``COPY (SELECT ...) TO STDOUT``)."""
    return sum(1 for _, state, query in sessions if state == "active" and "TO STDOUT" in query)


@pytest.mark.parametrize("command", ["rebuild", "verify"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_audit_leaves_nothing_behind(big_ledger: str, command: str, signum: int) -> None:
    observer = psycopg.connect(_libpq(big_ledger), autocommit=True)
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "jobledger.cli", "--database-url", big_ledger, command, *WORKERS],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # says little, and only as it ends
        text=True,
    )
    stderr = coordinator.stderr
    assert stderr is not None
    workers: list[int] = []
    try:
        assert _until(time.monotonic() + 60, lambda: _reading(_sessions(observer)) == 2), (
            "workers never ran"
        )
        workers = _children(coordinator.pid)
        assert len(workers) == 2, workers
        time.sleep(0.3)  # well into their ranges
        coordinator.send_signal(signum)
        deadline = time.monotonic() + CLEANUP_SECONDS
        code = coordinator.wait(timeout=10)
        # SIGTERM: the CLI exits through its cleanup (143, no traceback); SIGKILL allows none.
        expected = -signum if signum == signal.SIGKILL else 128 + signum
        assert code == expected, f"exit status {code}: {stderr.read()!r}"

        assert _until(deadline, lambda: not any(_alive(pid) for pid in workers)), (
            f"workers survived their coordinator: {[p for p in workers if _alive(p)]}"
        )
        assert _until(deadline, lambda: not _sessions(observer)), (
            f"sessions left behind: {_sessions(observer)}"
        )
        # The rebuild's lock is gone: an append does not wait (lock_timeout makes a wait fail).
        with Ledger(big_ledger + "?options=-c%20lock_timeout%3D1000") as ledger:
            started = time.monotonic()
            ledger.enqueue(f"after-{command}-{signum}")
            assert time.monotonic() - started < 1.0
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
        for pid in workers:  # leftovers of a failed run, so that the next test starts clean
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        observer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        observer.close()
        stderr.close()
