"""Kill ``jobledger rebuild|verify --workers 2`` mid-run: nothing may be left behind.

The workers must hold none of the coordinator's sockets (its connections, the
other workers' pipe ends). The coordinator is killed while its workers are
reading (SIGKILL, or SIGTERM). Within two seconds its workers must be gone,
the database must have no session of theirs or the coordinator's (the server
saw every connection close, so the rebuild's lock on ``jobledger_jobs`` is
released and the transactions are rolled back), and an append must go
through at once.

The ledger is filled in bulk (``benchmarks/audit_data.py``) with enough events
that the workers run for a few seconds, in a database of this module's own, so
that every other session on it is one the command left behind.
"""

from __future__ import annotations

import os
import shutil
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
from tests.helpers import alive, children, sockets

ROOT = Path(__file__).resolve().parents[2]
#: Well above audit.session.MIN_PARALLEL_EVENTS: two workers take a few seconds over these.
EVENTS = 300_000
#: SQLite is filled more slowly, and read more slowly: a few seconds' work as well.
SQLITE_EVENTS = 100_000
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


@pytest.fixture(scope="module")
def big_sqlite_ledger(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file holding SQLITE_EVENTS events."""
    path = tmp_path_factory.mktemp("kill") / "ledger.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = engine_for(url)
    populate([engine], SQLITE_EVENTS)
    engine.dispose()
    return url


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _sessions(observer: psycopg.Connection[tuple[object, ...]]) -> list[tuple[int, str, str]]:
    """``(pid, state, query)`` of every session on the database but the observer's."""
    rows = observer.execute(
        "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return [(int(pid), str(state), str(query)) for pid, state, query in rows]  # type: ignore[call-overload]


def _assert_share_no_socket(coordinator: int, workers: list[int]) -> None:
    """Running workers hold none of the sockets the coordinator holds."""
    assert all(alive(pid) for pid in workers), "the workers ended too soon to be tested"
    assert not _sharedsockets(coordinator, workers), (
        f"workers hold the coordinator's {_sharedsockets(coordinator, workers)}"
    )


def _sharedsockets(coordinator: int, workers: list[int]) -> set[str]:
    """Sockets the coordinator holds that a worker holds too (its connections, pipe ends)."""
    theirs = set().union(*(sockets(pid) for pid in workers))
    return sockets(coordinator) & theirs


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


COMMANDS = pytest.mark.parametrize("command", ["rebuild", "verify"])
SIGNALS = pytest.mark.parametrize(
    "signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"]
)


@COMMANDS
@SIGNALS
def test_killed_audit_leaves_nothing_behind(
    big_ledger: str, command: str, signum: int, tmp_path: Path
) -> None:
    observer = psycopg.connect(_libpq(big_ledger), autocommit=True)
    stderr = tmp_path / "stderr"
    coordinator = _start(big_ledger, command, stderr)
    workers: list[int] = []
    try:
        assert _until(time.monotonic() + 60, lambda: _reading(_sessions(observer)) == 2), (
            "workers never ran"
        )
        workers = children(coordinator.pid)
        assert len(workers) == 2, workers
        time.sleep(0.5)  # well into their ranges
        _assert_share_no_socket(coordinator.pid, workers)
        deadline = _stop(coordinator, signum, workers, stderr)
        assert _until(deadline, lambda: not _sessions(observer)), (
            f"sessions left behind: {_sessions(observer)}"
        )
        # The rebuild's lock is gone: an append does not wait (lock_timeout makes a wait fail).
        _append_at_once(big_ledger + "?options=-c%20lock_timeout%3D1000", f"{command}-{signum}")
    finally:
        _clean_up(coordinator, workers)
        observer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        observer.close()


@COMMANDS
@SIGNALS
def test_killed_audit_on_sqlite_leaves_no_worker(
    big_sqlite_ledger: str, command: str, signum: int, tmp_path: Path
) -> None:
    """No server sessions here, and no locks: workers must still not outlive the coordinator.

    (A surviving worker keeps its read transaction open, so the WAL file can never
    be checkpointed back to the start, and waits on its pipe forever.)
    """
    stderr = tmp_path / "stderr"
    coordinator = _start(big_sqlite_ledger, command, stderr)
    workers: list[int] = []
    try:
        workers = _frozen_mid_run(coordinator)
        _assert_share_no_socket(coordinator.pid, workers)
        _stop(coordinator, signum, workers, stderr)
        _append_at_once(big_sqlite_ledger, f"{command}-{signum}")
    finally:
        _clean_up(coordinator, workers)


@COMMANDS
def test_without_a_parent_death_signal_workers_end_at_their_next_message(
    big_sqlite_ledger: str, command: str, tmp_path: Path
) -> None:
    """Where Linux's parent-death signal is missing, a worker finds its pipe closed.

    Its next message (progress, every 10,000 events) fails, and it ends. This
    holds only because no worker keeps a copy of the coordinator's pipe ends.
    """
    stderr = tmp_path / "stderr"
    coordinator = _start(big_sqlite_ledger, command, stderr, python=ELSEWHERE)
    workers: list[int] = []
    try:
        workers = _frozen_mid_run(coordinator)
        _stop(coordinator, signal.SIGKILL, workers, stderr)
    finally:
        _clean_up(coordinator, workers)


def _frozen_mid_run(coordinator: subprocess.Popen[bytes]) -> list[int]:
    """The coordinator's workers, once they run, with the coordinator stopped (SIGSTOP).

    The SQLite ledger, which this module can fill only slowly, takes two workers
    half a second: stopped, the coordinator hands out no more work, so its
    workers (waiting for it) are still there when it is killed.
    """
    assert _until(time.monotonic() + 60, lambda: len(children(coordinator.pid)) == 2), (
        "workers never ran"
    )
    for _ in range(_FREEZE_TRIES):
        coordinator.send_signal(signal.SIGSTOP)
        workers = children(coordinator.pid)
        # Seen just after the fork, they may not have let go of what they inherited yet.
        if _let_go(coordinator.pid, workers):
            break
        # Stopped between forking the second worker and closing its copy of that worker's
        # pipe end (a loaded machine can hold a parent there): let it close it, stop it again.
        coordinator.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    return workers


#: How often the coordinator may be caught between a fork and its next line.
_FREEZE_TRIES = 3


def _let_go(coordinator: int, workers: list[int]) -> bool:
    """Whether the workers soon hold none of the coordinator's sockets."""
    return _until(time.monotonic() + 2, lambda: not _sharedsockets(coordinator, workers))


#: Runs the CLI as ``-m jobledger.cli`` does, on a platform that is not Linux
#: (so far as the workers can tell: sys.platform is changed after every import).
ELSEWHERE = (
    "-c",
    "import sys; from jobledger.cli import main; sys.platform = 'elsewhere'; main(sys.argv[1:])",
)


def _start(
    url: str, command: str, stderr: Path, python: tuple[str, ...] = ("-m", "jobledger.cli")
) -> subprocess.Popen[bytes]:
    # stderr goes to a file: a pipe would stay open as long as any worker survived.
    with stderr.open("wb") as errors:
        return subprocess.Popen(
            [sys.executable, *python, "--database-url", url, command, *WORKERS],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def _stop(
    coordinator: subprocess.Popen[bytes], signum: int, workers: list[int], stderr: Path
) -> float:
    """Send ``signum``; check the exit and that the workers are gone; the cleanup deadline."""
    assert all(alive(pid) for pid in workers), "the workers ended before they were killed"
    coordinator.send_signal(signum)
    coordinator.send_signal(signal.SIGCONT)  # if frozen: SIGTERM acts only on a running process
    deadline = time.monotonic() + CLEANUP_SECONDS
    code = coordinator.wait(timeout=10)
    assert code != 0, "the command ended before it was killed"
    assert _until(deadline, lambda: not any(alive(pid) for pid in workers)), (
        f"workers survived their coordinator: {[pid for pid in workers if alive(pid)]}"
    )
    # SIGTERM: the CLI exits through its cleanup (143, no traceback); SIGKILL allows none.
    expected = -signum if signum == signal.SIGKILL else 128 + signum
    assert code == expected, f"exit status {code}: {stderr.read_text(errors='replace')!r}"
    return deadline


def _append_at_once(url: str, job_id: str) -> None:
    with Ledger(url) as ledger:
        started = time.monotonic()
        ledger.enqueue(f"after-{job_id}")
        assert time.monotonic() - started < 1.0


def _clean_up(coordinator: subprocess.Popen[bytes], workers: list[int]) -> None:
    """Leftovers of a failed run, so that the next test starts clean."""
    workers = [*workers, *children(coordinator.pid)]
    if coordinator.poll() is None:
        coordinator.kill()
        coordinator.wait()
    for pid in workers:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
