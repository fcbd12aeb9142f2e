"""verify, replay and rebuild against real SQLite and PostgreSQL databases.

Tampering is done the way an attacker (or a careless migration) would do it:
with plain SQL behind the ledger's back.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from jobledger import Claim, Ledger, audit
from jobledger.audit import VerifyReport
from jobledger.chain import event_hash
from jobledger.errors import CorruptHistory, LedgerError
from jobledger.identity import new_identity
from jobledger.schema import events, jobs

A, B = new_identity(), new_identity()


def _populate(ledger: Ledger) -> None:
    """Four jobs in different states; "done" has four events, the others fewer."""
    ledger.enqueue("done", queue="mail", data={"to": "a@b.c"})
    claim = ledger.claim("done", A)
    ledger.heartbeat(claim, progress={"sent": 1})
    ledger.complete(claim, result={"ok": True})
    ledger.enqueue("retried")
    ledger.fail(ledger.claim("retried", A), "boom")
    ledger.requeue("retried")
    ledger.enqueue("waiting")
    ledger.enqueue("dropped")
    ledger.cancel("dropped")


def _sql(ledger: Ledger, statement: Any) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(statement)


def _event(job_id: str, version: int) -> Any:
    return (events.c.job_id == job_id) & (events.c.version == version)


def _problems(report: VerifyReport) -> set[tuple[str, int | None]]:
    return {(p.job_id, p.version) for p in report.problems}


def test_an_untouched_ledger_verifies(ledger: Ledger) -> None:
    _populate(ledger)
    report = ledger.verify()
    assert report.ok, report.problems
    assert (report.jobs, report.events, report.projection_rows) == (4, 11, 4)


def test_an_empty_ledger_verifies(ledger: Ledger) -> None:
    report = ledger.verify()
    assert report.ok
    assert (report.jobs, report.events) == (0, 0)


def _edit_data(ledger: Ledger) -> None:
    _sql(ledger, update(events).where(_event("done", 4)).values(data={"result": {"ok": False}}))


def _edit_type(ledger: Ledger) -> None:
    _sql(ledger, update(events).where(_event("done", 4)).values(type="failed"))


def _edit_time(ledger: Ledger) -> None:
    moment = ledger.history("done")[3].recorded_at + timedelta(microseconds=1)
    _sql(ledger, update(events).where(_event("done", 4)).values(recorded_at=moment))


def _edit_actor(ledger: Ledger) -> None:
    _sql(ledger, update(events).where(_event("done", 4)).values(process=B))


def _swap_versions(ledger: Ledger) -> None:
    # UNIQUE(job_id, version) forbids a direct swap; go through a free version number.
    _sql(ledger, update(events).where(_event("done", 2)).values(version=-2))
    _sql(ledger, update(events).where(_event("done", 3)).values(version=2))
    _sql(ledger, update(events).where(_event("done", -2)).values(version=3))


def _delete_middle(ledger: Ledger) -> None:
    _sql(ledger, delete(events).where(_event("done", 3)))


def _delete_last(ledger: Ledger) -> None:
    _sql(ledger, delete(events).where(_event("done", 4)))


@pytest.mark.parametrize(
    ("tamper", "blamed"),
    [
        (_edit_data, 4),
        (_edit_type, 4),
        (_edit_time, 4),
        (_edit_actor, 4),
        (_swap_versions, 2),
        (_delete_middle, 4),  # version 4 now follows version 2
        (_delete_last, 3),  # the chain is intact; the projection remembers version 4
    ],
)
def test_tampering_with_events_is_detected(
    ledger: Ledger, tamper: Callable[[Ledger], None], blamed: int
) -> None:
    _populate(ledger)
    tamper(ledger)
    report = ledger.verify()
    assert not report.ok
    assert ("done", blamed) in _problems(report), report.problems
    assert {job for job, _ in _problems(report)} == {"done"}  # the other jobs are intact
    assert all("done" in str(p) for p in report.problems)


def test_each_kind_of_damage_is_named(ledger: Ledger) -> None:
    _populate(ledger)
    _swap_versions(ledger)
    messages = " | ".join(str(p) for p in ledger.verify().problems)
    assert "job 'done' version 2: stored hash does not match" in messages
    assert "prev_hash is not version 1's hash" in messages


def test_a_deleted_last_event_shows_in_the_projection(ledger: Ledger) -> None:
    _populate(ledger)
    _delete_last(ledger)
    (problem,) = ledger.verify().problems
    assert problem.message.startswith("projection row differs from the fold of its events")
    assert "state is 'completed', events say 'claimed'" in problem.message


def test_a_forged_but_correctly_hashed_illegal_move_is_detected(ledger: Ledger) -> None:
    ledger.enqueue("j")
    first = ledger.history("j")[0]
    moment = first.recorded_at + timedelta(seconds=1)
    data = {"result": None}
    forged = event_hash(first.hash, "j", 2, "completed", A, data, moment)
    _sql(
        ledger,
        insert(events).values(
            job_id="j",
            version=2,
            type="completed",
            process=A,
            data=data,
            recorded_at=moment,
            prev_hash=first.hash,
            hash=forged,
        ),
    )
    (problem, *_) = ledger.verify().problems
    assert (problem.job_id, problem.version) == ("j", 2)
    assert "'completed' is not a legal move from 'enqueued'" in problem.message


def test_projection_damage_is_detected(ledger: Ledger) -> None:
    _populate(ledger)
    _sql(ledger, update(jobs).where(jobs.c.job_id == "waiting").values(state="claimed"))
    _sql(ledger, delete(jobs).where(jobs.c.job_id == "dropped"))
    row = {c.name: getattr(ledger.status("done"), c.name) for c in jobs.columns}
    _sql(ledger, insert(jobs).values({**row, "job_id": "ghost"}))
    problems = {(p.job_id, p.message.split(":")[0]) for p in ledger.verify().problems}
    assert problems == {
        ("waiting", "projection row differs from the fold of its events"),
        ("dropped", "job has events but no projection row"),
        ("ghost", "projection row has no events"),
    }


# --- replay --------------------------------------------------------------------------------


def test_replay_without_a_time_equals_the_projection(ledger: Ledger) -> None:
    _populate(ledger)
    assert ledger.replay() == {status.job_id: status for status in ledger.jobs()}


def test_replay_shows_each_job_as_it_was(ledger: Ledger) -> None:
    _populate(ledger)
    history = ledger.history("done")
    before = ledger.replay(until=history[0].recorded_at - timedelta(microseconds=1))
    assert "done" not in before
    moment = history[1].recorded_at
    during = ledger.replay(until=moment)
    assert (during["done"].state, during["done"].claimed_by) == ("claimed", A)
    # SQLite's clock ticks in milliseconds: the heartbeat may share the claim's instant.
    assert during["done"].version == max(e.version for e in history if e.recorded_at <= moment)
    assert ledger.status("done").state == "completed"  # the projection is untouched


def test_replay_refuses_a_naive_time(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.replay(until=datetime(2026, 1, 1))


# --- rebuild -------------------------------------------------------------------------------


def _projection(ledger: Ledger) -> list[tuple[Any, ...]]:
    with ledger.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(jobs).order_by(jobs.c.job_id))]


#: Relative weights of the commands the random client sends.
ACTIONS = {
    "claim": 4,
    "heartbeat": 2,
    "complete": 2,
    "fail": 1,
    "release": 1,
    "abandon": 1,
    "requeue": 1,
    "cancel": 0.3,
    "stale": 0.5,  # a holder whose claim ended tries to complete: refused, and recorded
}
ENDS_CLAIM = {"complete", "fail", "release", "abandon"}


def _random_operations(ledger: Ledger, count: int, seed: int) -> None:
    """``count`` commands picked at random; illegal ones are refused (and some recorded)."""
    rng = random.Random(seed)
    claims: dict[str, Claim] = {}
    stale: list[Claim] = [Claim("nobody", 1, 1, B)]
    ids: list[str] = []
    holder_commands: dict[str, Callable[[Claim, int], object]] = {
        "heartbeat": lambda c, n: ledger.heartbeat(c, progress={"step": n}),
        "complete": lambda c, n: ledger.complete(c, result={"step": n, "score": n / 7}),
        "fail": lambda c, n: ledger.fail(c, f"error {n}"),
        "release": lambda c, n: ledger.release(c),
        "abandon": lambda c, n: ledger.abandon(c.job_id, c.token, reason="holder vanished"),
    }
    names, weights = list(ACTIONS), list(ACTIONS.values())
    for step in range(count):
        if not ids or rng.random() < 0.12:
            ids.append(f"job-{step}")
            ledger.enqueue(ids[-1], queue=rng.choice(["a", "b"]), data={"n": step})
            continue
        job_id = rng.choice(ids)
        (action,) = rng.choices(names, weights)
        claim = claims.get(job_id)
        with contextlib.suppress(LedgerError):
            if action == "claim":
                claims[job_id] = ledger.claim(job_id, rng.choice([A, B]))
            elif action == "requeue":
                ledger.requeue(job_id)
            elif action == "cancel":
                ledger.cancel(job_id)
            elif action == "stale":
                ledger.complete(rng.choice(stale))
            elif claim is not None:
                holder_commands[action](claim, step)
                if action in ENDS_CLAIM:
                    stale.append(claims.pop(job_id))


def test_rebuild_after_random_operations_is_identical_row_for_row(ledger: Ledger) -> None:
    _random_operations(ledger, 2500, seed=20261126)
    before = _projection(ledger)
    assert len(before) > 200
    seen: list[tuple[int, int]] = []
    assert ledger.rebuild(progress=lambda done, total: seen.append((done, total))) == len(before)
    assert _projection(ledger) == before
    assert seen[-1][0] == seen[-1][1] > len(before)
    report = ledger.verify()
    assert report.ok, report.problems[:5]


def test_rebuild_repairs_a_damaged_projection(ledger: Ledger) -> None:
    _populate(ledger)
    before = _projection(ledger)
    _sql(ledger, update(jobs).where(jobs.c.job_id == "waiting").values(state="claimed"))
    _sql(ledger, delete(jobs).where(jobs.c.job_id == "done"))
    assert not ledger.verify().ok
    assert ledger.rebuild() == 4
    assert _projection(ledger) == before
    assert ledger.verify().ok


def test_rebuild_of_a_corrupt_history_changes_nothing(ledger: Ledger) -> None:
    _populate(ledger)
    before = _projection(ledger)
    _delete_middle(ledger)
    with pytest.raises(CorruptHistory, match="'done': expected version 3, found 4"):
        ledger.rebuild()
    assert _projection(ledger) == before


def test_readers_see_the_old_projection_and_writers_wait_during_a_rebuild(
    ledger: Ledger,
) -> None:
    _populate(ledger)
    before = _projection(ledger)
    halfway, resume = threading.Event(), threading.Event()

    def pause(done: int, total: int) -> None:
        if done < total:
            halfway.set()
            assert resume.wait(30)

    rebuilt: list[int] = []
    rebuilder = threading.Thread(target=lambda: rebuilt.append(ledger.rebuild(progress=pause)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("jobledger.audit.session.BATCH_SIZE", 2)  # pause after the first two jobs
        rebuilder.start()
        assert halfway.wait(30)
        assert _projection(ledger) == before  # the rows are deleted and half re-made, unseen
        writer = threading.Thread(target=ledger.enqueue, args=("late",))
        writer.start()
        time.sleep(0.5)
        assert writer.is_alive(), "an append went through in the middle of a rebuild"
        resume.set()
        rebuilder.join(30)
        writer.join(30)
    assert rebuilt == [4]
    assert ledger.status("late").state == "enqueued"
    assert ledger.verify().ok


def test_batch_boundaries_change_nothing(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs are compared with the projection a batch (a range of ids) at a time."""
    for n in range(7):
        ledger.enqueue(f"job-{n}")
    _edit_data_of(ledger, "job-3")
    row = {c.name: getattr(ledger.status("job-0"), c.name) for c in jobs.columns}
    for ghost in ("a-first", "job-1a", "job-4a", "z-last"):  # before, between and after batches
        _sql(ledger, insert(jobs).values({**row, "job_id": ghost}))
    _sql(ledger, delete(jobs).where(jobs.c.job_id == "job-5"))
    expected = {
        ("a-first", "projection row has no events"),
        ("job-1a", "projection row has no events"),
        ("job-3", "stored hash does not match the event's contents"),
        (
            "job-3",
            "projection row differs from the fold of its events: queue is 'default', "
            "events say 'forged'",
        ),
        ("job-4a", "projection row has no events"),
        ("job-5", "job has events but no projection row"),
        ("z-last", "projection row has no events"),
    }
    for size in (1, 2, 3, 100):
        monkeypatch.setattr("jobledger.audit.session.BATCH_SIZE", size)
        report = ledger.verify()
        assert {(p.job_id, p.message) for p in report.problems} == expected, size
        assert (report.jobs, report.events, report.projection_rows) == (7, 7, 10)


def _edit_data_of(ledger: Ledger, job_id: str) -> None:
    _sql(ledger, update(events).where(_event(job_id, 1)).values(data={"queue": "forged"}))


def test_data_that_is_not_json_is_reported_not_fatal(tmp_path: Path, sqlite_template: Path) -> None:
    """Only SQLite can store such text (PostgreSQL's JSONB refuses it)."""
    path = tmp_path / "broken.db"
    path.write_bytes(sqlite_template.read_bytes())
    with Ledger(f"sqlite:///{path}") as ledger:
        ledger.enqueue("j")
        ledger.cancel("j")
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE jobledger_events SET data = '{oops' WHERE version = 2")
        (problem,) = ledger.verify().problems
    assert (problem.job_id, problem.version) == ("j", 2)
    assert "stored hash does not match" in problem.message


def test_a_lone_surrogate_in_stored_data_is_reported_not_fatal(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """No write can store one (payloads are refused), so it can only come from tampering."""
    path = tmp_path / "surrogate.db"
    path.write_bytes(sqlite_template.read_bytes())
    with Ledger(f"sqlite:///{path}") as ledger:
        ledger.enqueue("j", data={"a": "b"})
        with ledger.engine.begin() as conn:
            tampered = '{"queue":"default","data":{"a":"\\ud800"}}'
            conn.exec_driver_sql(f"UPDATE jobledger_events SET data = '{tampered}'")
        (problem,) = ledger.verify(workers=1).problems
    assert (problem.job_id, problem.version) == ("j", 1)
    assert "stored hash does not match" in problem.message


@pytest.mark.parametrize(("usable", "expected"), [(1, 1), (2, 2), (64, 8)])
def test_default_workers_follow_usable_cpus_up_to_a_cap(
    monkeypatch: pytest.MonkeyPatch, usable: int, expected: int
) -> None:
    """A 64-CPU host must not open 64 database connections for one verify unasked."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(usable)), raising=False)
    assert audit.default_workers() == expected


def test_the_audit_package_keeps_its_public_names() -> None:
    """``jobledger.audit`` became a package; what callers reached through it still works."""
    from jobledger.audit import exports, folding, session, verification

    assert audit.verify is verification.verify
    assert (audit.replay, audit.state_counts, audit.rebuild) == (
        folding.replay,
        folding.state_counts,
        folding.rebuild,
    )
    assert (audit.export, audit.verify_export) == (exports.export, exports.verify_export)
    assert audit.default_workers is session.default_workers
    assert {"Problem", "Progress", "StoredEvent", "VerifyReport"} <= set(audit.__all__)
