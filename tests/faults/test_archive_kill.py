"""SIGKILL a real ``jobledger archive`` while it writes its file, and while it deletes.

Whatever the moment: verify of what the database holds is ok, the run again
with the same ``--to`` finishes, no partial file is left, and nothing is lost:
every event is in the database or in the finished archive file, exactly once.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.audit_data import populate
from jobledger import Ledger
from jobledger.archive import list_archives
from jobledger.database import engine_for
from jobledger.schema import archives, events
from jobledger.sealer import Sealer
from jobledger.testing import scratch_database
from tests.helpers import JOBLEDGER, seal_all

#: Events of the generated ledger (dated from 2026-01-01, one minute apart per job).
EVENTS = 10_000
CUTOFF = "2026-03-01T00:00:00Z"


@pytest.fixture(params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """A sealed ledger of EVENTS events, in a database of this test's own."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copy(sqlite_template, path)
        yield _filled(f"sqlite:///{path}")
        return
    server: str = request.getfixturevalue("postgres_server_url")
    with scratch_database(server, prefix="jl_archive_kill") as url:
        text = url.render_as_string(hide_password=False)
        with Ledger(text) as ledger:
            ledger.migrate()
        yield _filled(text)


def _filled(url: str) -> str:
    engine = engine_for(url)
    populate([engine], EVENTS)
    engine.dispose()
    with Ledger(url) as ledger:
        seal_all(ledger, Sealer(ledger, batch_size=10_000))
    return url


def _contents(url: str) -> set[tuple[str, int, str]]:
    engine = engine_for(url)
    with engine.connect() as conn:
        rows = conn.execute(select(events.c.job_id, events.c.version, events.c.hash)).all()
    engine.dispose()
    return {(row.job_id, row.version, row.hash) for row in rows}


def _in_file(path: Path) -> list[tuple[str, int, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        next(file)
        return [(e["job_id"], e["version"], e["hash"]) for e in map(json.loads, file)]


def _archive(url: str, path: Path, *extra: str) -> subprocess.Popen[str]:
    command = [JOBLEDGER, "--database-url", url, "archive", "--finished-before", CUTOFF]
    return subprocess.Popen(
        [*command, "--to", str(path), *extra, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_when(process: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _deleting(url: str) -> Callable[[], bool]:
    engine = engine_for(url)

    def ready() -> bool:
        with engine.connect() as conn:
            row = conn.execute(select(archives.c.deleted_jobs, archives.c.jobs)).first()
        return row is not None and 0 < row.deleted_jobs < row.jobs // 2

    return ready


def _finish_and_check(url: str, path: Path, before: set[tuple[str, int, str]]) -> None:
    """Run again to the end; verify, and account for every event exactly once."""
    rerun = _archive(url, path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert json.loads(out)["resumed"] in (True, False)
    (record,) = list_archives(engine_for(url))
    assert record.finished
    assert record.deleted_events == record.events
    with Ledger(url) as ledger:
        report = ledger.verify()
    assert report.ok, report.problems[:5]
    assert report.archived == record.events
    archived = _in_file(path)
    remaining = _contents(url)
    assert len(archived) == len(set(archived)) == record.events
    assert set(archived) | remaining == before
    assert not set(archived) & remaining
    assert glob.glob(f"{glob.escape(str(path))}.partial-*") == []


def test_killed_while_deleting_a_rerun_finishes_and_loses_nothing(
    filled: str, tmp_path: Path
) -> None:
    before = _contents(filled)
    path = tmp_path / "old.jsonl.gz"
    _kill_when(_archive(filled, path, "--batch", "5"), _deleting(filled))
    (record,) = list_archives(engine_for(filled))
    assert not record.finished
    assert 0 < record.deleted_events < record.events
    with Ledger(filled) as ledger:  # half-way, what remains verifies too
        report = ledger.verify()
    assert report.ok, report.problems[:5]
    assert report.archived == record.deleted_events
    _finish_and_check(filled, path, before)


def test_killed_while_writing_the_file_a_rerun_starts_afresh(filled: str, tmp_path: Path) -> None:
    before = _contents(filled)
    path = tmp_path / "old.jsonl.gz"
    partials = f"{glob.escape(str(path))}.partial-*"

    def writing() -> bool:
        return any(os.path.getsize(p) > 4096 for p in glob.glob(partials))

    _kill_when(_archive(filled, path), writing)
    assert not path.exists()
    assert list_archives(engine_for(filled)) == []
    assert _contents(filled) == before
    _finish_and_check(filled, path, before)


def test_an_unfinished_archive_blocks_another_file_until_finished(
    filled: str, tmp_path: Path
) -> None:
    before = _contents(filled)
    path = tmp_path / "old.jsonl.gz"
    _kill_when(_archive(filled, path, "--batch", "5"), _deleting(filled))
    other = _archive(filled, tmp_path / "other.jsonl.gz")
    _, err = other.communicate(timeout=120)
    assert other.returncode == 1
    assert err.strip().endswith("to finish it first"), err
    assert not (tmp_path / "other.jsonl.gz").exists()
    _finish_and_check(filled, path, before)


def test_two_archivers_at_once_corrupt_nothing(filled: str, tmp_path: Path) -> None:
    before = _contents(filled)
    path = tmp_path / "old.jsonl.gz"
    _kill_when(_archive(filled, path, "--batch", "5"), _deleting(filled))
    # Two reruns of the same archive at once take turns batch by batch.
    runs = [_archive(filled, path, "--batch", "5") for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    _finish_and_check(filled, path, before)
