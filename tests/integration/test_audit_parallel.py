"""verify and rebuild in worker processes report and write exactly what one process does.

Workers start only above audit.session.MIN_PARALLEL_EVENTS events; the ``forked``
fixture lowers that to 0 and records whether each run really used workers.
Tampering is done with plain SQL, as in test_audit.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete, insert, update

from jobledger import Ledger, audit
from jobledger import names as name_rules
from jobledger.audit import anchored, session, shards, verification
from jobledger.audit.bulk import CoreBulk
from jobledger.errors import CorruptHistory, DatabaseUnavailable
from jobledger.identity import new_identity
from jobledger.schema import anchor, events, jobs
from tests.helpers import seal_all
from tests.integration.test_audit import (
    _delete_last,
    _delete_middle,
    _edit_actor,
    _edit_data,
    _edit_time,
    _edit_type,
    _event,
    _populate,
    _projection,
    _random_operations,
    _sql,
    _swap_versions,
)


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Workers for any number of events; one entry per run: whether workers did it."""
    monkeypatch.setattr(session, "MIN_PARALLEL_EVENTS", 0)
    assert shards.can_fork(), f"other threads are running: {threading.enumerate()}"
    runs: list[bool] = []
    real = shards.run

    def run(*args: Any) -> Any:
        result = real(*args)
        runs.append(result is not None)
        return result

    monkeypatch.setattr(shards, "run", run)
    return runs


@pytest.fixture
def busy(ledger: Ledger) -> Ledger:
    """About sixty jobs of every kind, spread over the id space ("done" to "waiting")."""
    _random_operations(ledger, 300, seed=4)
    _populate(ledger)
    return ledger


def _some_jobs(ledger: Ledger) -> list[str]:
    """Three job ids from the middle of the id space: a third, half and two thirds in."""
    ids = sorted(status.job_id for status in ledger.jobs())
    return [ids[len(ids) // 3], ids[len(ids) // 2], ids[2 * len(ids) // 3]]


def _ghost_and_missing_rows(ledger: Ledger) -> None:
    first, middle, last = _some_jobs(ledger)
    row = {c.name: getattr(ledger.status("done"), c.name) for c in jobs.columns}
    for ghost in ("a-first", f"{middle}a", "zz-last"):
        _sql(ledger, insert(jobs).values({**row, "job_id": ghost}))
    _sql(ledger, delete(jobs).where(jobs.c.job_id.in_(["waiting", first])))
    _sql(ledger, update(jobs).where(jobs.c.job_id == last).values(attempt=7))


def _everything(ledger: Ledger) -> None:
    first, middle, _ = _some_jobs(ledger)
    _edit_data(ledger)
    _sql(ledger, update(events).where(_event("retried", 2)).values(process=new_identity()))
    _sql(ledger, delete(events).where(_event(first, 1)))
    _sql(ledger, update(events).where(_event(middle, 1)).values(data={"queue": "forged"}))
    _ghost_and_missing_rows(ledger)


TAMPERING: list[Callable[[Ledger], None]] = [
    _edit_data,
    _edit_type,
    _edit_time,
    _edit_actor,
    _swap_versions,
    _delete_middle,
    _delete_last,
    _ghost_and_missing_rows,
    _everything,
]


@pytest.mark.parametrize("tamper", TAMPERING)
def test_workers_find_what_one_process_finds(
    busy: Ledger, forked: list[bool], tamper: Callable[[Ledger], None]
) -> None:
    tamper(busy)
    alone = audit.verify(busy.engine, workers=1)
    assert not alone.ok
    for workers in (2, 3):
        assert audit.verify(busy.engine, workers=workers) == alone, workers
    assert forked == [True, True]


def test_an_intact_ledger_verifies_in_workers(busy: Ledger, forked: list[bool]) -> None:
    seen: list[tuple[int, int]] = []
    report = audit.verify(busy.engine, lambda done, total: seen.append((done, total)), workers=2)
    assert report.ok, report.problems
    assert report == audit.verify(busy.engine, workers=1)
    assert seen[-1] == (report.events, report.events)
    assert forked == [True]


def test_the_anchor_is_checked_while_the_workers_check_the_events(
    busy: Ledger, forked: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    seal_all(busy)
    _sql(busy, update(anchor).where(anchor.c.seq == 5).values(digest="0" * 64))
    _sql(busy, delete(anchor).where(anchor.c.seq == 9))
    _edit_data(busy)
    monkeypatch.setattr(anchored, "STEP", 1)  # a look at the workers after every link
    alone = audit.verify(busy.engine, workers=1)
    messages = [str(p) for p in alone.problems]
    assert any("anchor link 5 does not match" in m for m in messages), messages
    assert any("anchor links 9 are missing" in m for m in messages), messages
    steps: list[int] = []  # steps of the anchor's check taken before the workers were done
    forked_run = shards.run

    def run(*args: Any) -> Any:
        *arguments, side = args
        taken = 0

        def counted() -> Iterator[None]:
            nonlocal taken
            for step in side:
                taken += 1
                yield step

        result = forked_run(*arguments, counted())
        steps.append(taken)
        return result

    monkeypatch.setattr(shards, "run", run)
    assert audit.verify(busy.engine, workers=2) == alone
    assert forked == [True]
    assert steps[0] > 0


def test_a_failing_worker_stops_the_anchor_check_too(
    ledger: Ledger, forked: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The anchor's stream is open when a worker fails: verify raises the worker's error
    and lets go of the stream. On PostgreSQL it is a COPY too large for the socket's
    buffers, so the server waits to send more, and a rollback would wait for it forever."""
    ledger.enqueue_many([f"job-{n}" for n in range(30_000)])
    seal_all(ledger)
    monkeypatch.setattr(anchored, "STEP", 1)
    forked_run = shards.run

    def fail(*_: Any) -> None:
        raise RuntimeError("a worker failed")

    def run(*args: Any) -> Any:
        _, *arguments, side = args
        next(side)  # the first link checked: the stream is open
        return forked_run(fail, *arguments, side)

    monkeypatch.setattr(shards, "run", run)
    with pytest.raises(RuntimeError, match="a worker failed"):
        audit.verify(ledger.engine, workers=2)
    monkeypatch.setattr(shards, "run", forked_run)
    assert audit.verify(ledger.engine, workers=2).ok


def test_the_first_problems_are_kept_however_the_work_is_split(
    busy: Ledger, forked: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verification, "MAX_PROBLEMS", 4)
    _sql(busy, update(events).values(data={"forged": True}))  # every event's hash fails
    alone = audit.verify(busy.engine, workers=1)
    assert len(alone.problems) == 4 < alone.problem_count
    assert audit.verify(busy.engine, workers=3) == alone
    assert forked == [True]


def test_workers_rebuild_the_same_projection(busy: Ledger, forked: list[bool]) -> None:
    before = _projection(busy)
    _sql(busy, delete(jobs).where(jobs.c.job_id == "done"))
    seen: list[tuple[int, int]] = []
    assert audit.rebuild(busy.engine, lambda *p: seen.append(p), workers=3) == len(before)
    assert _projection(busy) == before
    assert seen[-1][0] == seen[-1][1] > len(before)
    assert forked == [True]


def test_a_corrupt_history_found_by_a_worker_changes_nothing(
    busy: Ledger, forked: list[bool]
) -> None:
    before = _projection(busy)
    _delete_middle(busy)
    with pytest.raises(CorruptHistory, match="'done': expected version 3, found 4"):
        audit.rebuild(busy.engine, workers=2)
    assert _projection(busy) == before
    assert busy.verify().problem_count > 0  # the connection pool is still usable


def test_workers_that_cannot_connect_leave_the_work_to_one_process(
    busy: Ledger, forked: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator, real_open = os.getpid(), shards.Source.open

    def refuse(self: shards.Source) -> Any:
        if os.getpid() != coordinator:
            raise DatabaseUnavailable("no")
        return real_open(self)

    _edit_data(busy)
    alone = audit.verify(busy.engine, workers=1)
    before = _projection(busy)
    monkeypatch.setattr(shards.Source, "open", refuse)
    assert audit.verify(busy.engine, workers=2) == alone
    _sql(busy, delete(jobs))
    assert audit.rebuild(busy.engine, workers=2) == len(before)
    assert _projection(busy) == before
    assert forked == [False, False]


def test_with_other_threads_running_the_work_stays_in_one_process(
    busy: Ledger, forked: list[bool]
) -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not shards.can_fork()
        assert audit.verify(busy.engine, workers=2).ok
    finally:
        release.set()
        other.join()
    assert forked == []


def test_awkward_text_survives_copy_in_both_directions(
    ledger: Ledger, forked: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tabs, newlines, backslashes and non-ASCII in every free-text column.

    New ids and queue names may no longer hold controls (jobledger.names), but ids
    stored before that rule still must survive; they are stored here as they were then.
    """
    monkeypatch.setattr(name_rules, "checked_new", lambda value, what="job id": value)
    names = ["tab\tjob", "new\nline", "back\\slash", "ünï\u2028cödé", "quote\"'", "\\N"]
    claimer = new_identity()
    for n, name in enumerate(names):
        ledger.enqueue(name, queue=f"q\t{n}\\", data={"text": name, "float": n / 3, "n": None})
        claim = ledger.claim(name, claimer)
        ledger.heartbeat(claim, progress={"line": "a\nb\\c\td"})
        ledger.fail(claim, f"error\r\n\\{name}")
    before = _projection(ledger)
    assert audit.verify(ledger.engine, workers=1).ok
    assert audit.verify(ledger.engine, workers=2).ok
    exported = io.StringIO()
    assert ledger.export(exported) == 4 * len(names)
    assert audit.verify_export(io.StringIO(exported.getvalue())).ok  # not splitlines: U+2028
    for workers in (1, 2):
        _sql(ledger, delete(jobs))
        assert audit.rebuild(ledger.engine, workers=workers) == len(names)
        assert _projection(ledger) == before
    assert forked == [True, True]


@pytest.mark.parametrize(
    "tamper", [_edit_time, _swap_versions, _ghost_and_missing_rows, _everything]
)
def test_the_generic_reader_finds_what_the_fast_one_finds(
    busy: Ledger, monkeypatch: pytest.MonkeyPatch, tamper: Callable[[Ledger], None]
) -> None:
    """CoreBulk (for other databases) on these two: the same stream, through SQLAlchemy."""
    tamper(busy)
    fast = audit.verify(busy.engine, workers=1)
    monkeypatch.setattr(session, "bulk_for", CoreBulk)
    assert audit.verify(busy.engine, workers=1) == fast


def test_the_generic_reader_rebuilds_the_same_projection(
    busy: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _projection(busy)
    _sql(busy, delete(jobs).where(jobs.c.job_id < "m"))
    monkeypatch.setattr(session, "bulk_for", CoreBulk)
    assert audit.rebuild(busy.engine, workers=1) == len(before)
    assert _projection(busy) == before


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupted_verify_leaves_the_ledger_usable(
    busy: Ledger, forked: list[bool], monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """A progress callback that raises stops verify mid-stream (a COPY in flight)."""
    monkeypatch.setattr(session, "BATCH_SIZE", 1)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit.verify(busy.engine, interrupt, workers=workers)
    assert audit.verify(busy.engine, workers=1).ok
    assert busy.status("done").state == "completed"
