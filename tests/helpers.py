"""Helpers shared by the suite's test files (fixtures stay in the conftest files)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hypothesis import strategies as st
from sqlalchemy import Connection, func, insert, select, text

from jobledger.chain import GENESIS, event_hash
from jobledger.database import engine_for
from jobledger.identity import new_identity
from jobledger.liveness import ProcessInfo
from jobledger.projection import fold
from jobledger.records import Event
from jobledger.schema import anchor, events, jobs
from jobledger.sealer import Sealer
from jobledger.storage.rows import status_values

if TYPE_CHECKING:
    from jobledger import Ledger
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


T = TypeVar("T")


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``condition()`` held, polling every ``step``; fails after ``timeout``.

    What a test waits on instead of sleeping "long enough": it goes on as soon as
    the thing happened, and says so when it never did.
    """
    started = time.monotonic()
    if not eventually(condition, bool, timeout, step):
        raise AssertionError(f"condition not met within {timeout}s")
    return time.monotonic() - started


def eventually(
    get: Callable[[], T], done: Callable[[T], bool], within: float = 60.0, step: float = 0.2
) -> T:
    """``get()``'s first result that is ``done``, or its last one after ``within`` seconds:
    :func:`wait_for` for a value the test then asserts on (its failure shows the value)."""
    deadline = time.monotonic() + within
    while True:
        result = get()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(step)


def jump_clock(ledger: Ledger, off_by: timedelta) -> None:
    """Make ``ledger`` reckon the database clock as if this process's clock had jumped
    ``off_by`` since its last read measured the offset."""
    store = ledger._store
    assert store._clock_offset is not None  # measured by a read
    store._clock_offset += off_by.total_seconds()


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


def ledger_cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m jobledger.cli --database-url URL ARGS...``, as a user (or a cron job) runs
    it, its UTF-8 output captured; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", "jobledger.cli", "--database-url", url, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        input=stdin,
        timeout=120,
        check=False,
    )


def count_rows(ledger: Ledger, table: Any) -> int:
    with ledger.engine.connect() as conn:
        count: int = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return count


def seal_all(ledger: Ledger, sealer: Sealer | None = None, timeout: float = 60.0) -> Sealer:
    """Seal until every event is sealed: on PostgreSQL, open transactions anywhere on the
    server (another test's, in another database) hold the sealer's horizon back a while."""
    sealer = sealer or Sealer(ledger)
    deadline = time.monotonic() + timeout
    while sealer.run_once() >= 0 and count_rows(ledger, anchor) < count_rows(ledger, events):
        assert time.monotonic() < deadline, "the sealer did not catch up"
        time.sleep(0.02)
    return sealer


def terminate_cleanly(process: subprocess.Popen[str]) -> str:
    """SIGTERM, wait, and its stderr; fails unless it exited cleanly."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def marker_lines(marker: Path) -> list[str]:
    """What a test job wrote to its marker file (``start``, ``done``), none if it never ran."""
    return marker.read_text().split() if marker.exists() else []


def run_settled(redeliverer: Redeliverer, timeout: float = 90.0) -> None:
    """Deliver until no committed event is held back. On PostgreSQL a writing transaction
    left open anywhere on the (shared) server holds the catch-up horizon back for a while:
    another test's bulk load in its own database, on the other test worker, can take a
    minute on a loaded machine."""
    deadline = time.monotonic() + timeout
    redeliverer.run_once()
    while (holdup := redeliverer.catchup.holdup()) is not None:
        assert time.monotonic() < deadline, f"still held back after {timeout}s: {holdup}"
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


# -- processes, as /proc shows them (Linux) ---------------------------------------------


def parent_and_state(pid: int) -> tuple[int, str] | None:
    """``pid``'s parent and state letter, or ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0]


def parent_of(pid: int) -> int | None:
    found = parent_and_state(pid)
    return None if found is None else found[0]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs still (a zombie waiting for its reaper is dead)."""
    found = parent_and_state(pid)
    return found is not None and found[1] not in ("Z", "X")


def children(parent: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``parent``."""
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return [pid for pid in pids if alive(pid) and parent_of(pid) == parent]


def sockets(pid: int) -> set[str]:
    """The sockets ``pid`` holds open, as ``socket:[inode]``."""
    found = set()
    with contextlib.suppress(OSError):  # the process ended
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed since the listing
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:"):
                    found.add(target)
    return found


def append_in(conn: Connection, job_id: str) -> None:
    """Enqueue ``job_id`` by hand inside ``conn``'s open transaction, as the ledger would."""
    now = conn.execute(select(func.now())).scalar_one()
    data = {"queue": "late", "data": None}
    digest = event_hash(GENESIS, job_id, 1, "enqueued", None, data, now)
    event = Event(-1, job_id, 1, "enqueued", None, data, now, GENESIS, digest)
    conn.execute(insert(jobs).values(status_values(fold(None, event))))
    row = {name: getattr(event, name) for name in ("job_id", "version", "type", "process")}
    conn.execute(
        insert(events).values(
            **row,
            data=data,
            recorded_at=now,
            prev_hash=GENESIS,
            hash=digest,
            tx_id=func.pg_current_xact_id(),
        )
    )
