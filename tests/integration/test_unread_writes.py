"""Unread writes on both backends: a holder's writes, a claim from a handed-over row and
an enqueue go out without reading the job first.

On SQLite an unread write is the guarded ``UPDATE`` and the event's ``INSERT`` inside
``BEGIN IMMEDIATE``; on PostgreSQL one statement. A holder's write is guarded by the
version and last hash of the row it wrote itself (a row handed over: every column, as
``test_handoff`` pins down). These tests pin down, on real databases, that a refused guard
writes nothing and the ordinary command then reads the job, records the stale holder's
``rejected`` event and raises ``StaleClaim``, as before; and that the async store sends
the same writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from jobledger import Ledger, RecoveryPolicy
from jobledger.aio import AsyncLedger
from jobledger.aio.store import AsyncStore
from jobledger.errors import DuplicateJob, StaleClaim
from jobledger.identity import new_identity
from jobledger.store import CLOCK_TOLERANCE
from tests.helpers import jump_clock

A, B = new_identity("host-a"), new_identity("host-b")


def _sent_by(sent: list[str], command: Callable[[], object]) -> list[str]:
    sent.clear()
    command()
    return [_verb(sql) for sql in sent]


def _verb(sql: str) -> str:
    """``BEGIN IMMEDIATE``, ``UPDATE``, ``INSERT``, ``SELECT`` or ``WITH``: what was sent."""
    words = sql.split()
    return " ".join(words[:2]) if words[0].upper() == "BEGIN" else words[0].upper()


def _unread(database_url: str) -> list[str]:
    """What one unread write sends on this backend (the sync store commits by the driver's
    call, which the count does not see)."""
    if database_url.startswith("sqlite"):
        return ["BEGIN IMMEDIATE", "UPDATE", "INSERT"]
    return ["WITH"]


def _refused(database_url: str) -> list[str]:
    """What an unread write refused by its guard sends: on SQLite no INSERT follows."""
    unread = _unread(database_url)
    return unread[:-1] if database_url.startswith("sqlite") else unread


def test_a_holders_writes_and_a_handed_over_claim_read_nothing(
    database_url: str, statements: list[str]
) -> None:
    ledger = Ledger(database_url, heartbeat_interval=0)
    ledger.enqueue("first")  # a fresh Ledger reads once: that measures the clock
    created = ["BEGIN IMMEDIATE", "INSERT", "INSERT"] if "sqlite" in database_url else ["WITH"]
    rows = {}
    for job in ("done", "broken", "given-back"):
        assert _sent_by(statements, lambda j=job: rows.update({j: ledger.enqueue(j)})) == created
    claims = {}
    for job, row in rows.items():

        def claim(j: str = job, r: Any = row) -> None:
            claims[j] = ledger.claim(j, A, seen=r)

        assert _sent_by(statements, claim) == _unread(database_url)
    done, broken, given_back = claims["done"], claims["broken"], claims["given-back"]
    for command in (
        lambda: ledger.heartbeat(done, progress=1),
        lambda: ledger.complete(done, result="ok"),
        lambda: ledger.fail(broken, error="boom"),
        lambda: ledger.release(given_back, reason="stopping"),
    ):
        assert _sent_by(statements, command) == _unread(database_url)
    assert [e.type for e in ledger.history("done")] == [
        "enqueued",
        "claimed",
        "heartbeat",
        "completed",
    ]
    assert ledger.status("broken").last_error == "boom"
    assert ledger.status("given-back").state == "enqueued"
    history = ledger.history("done")
    assert [e.version for e in history] == [1, 2, 3, 4]
    assert all(a.recorded_at <= b.recorded_at for a, b in itertools.pairwise(history))
    assert ledger.verify().ok  # chains, paths, and the projection as a rebuild folds it
    ledger.close()


def test_a_stale_holders_unread_write_is_refused_then_recorded_as_rejected(
    database_url: str, statements: list[str]
) -> None:
    """The guard refuses the remembered row (another process moved the job on): nothing
    is written by the unread write; the command then reads, records ``rejected`` and
    raises ``StaleClaim``."""
    holder, recovery = Ledger(database_url, heartbeat_interval=0), Ledger(database_url)
    holder.enqueue("j")
    stale = holder.claim("j", A)
    recovery.abandon("j", stale.token, "holder presumed dead", policy=RecoveryPolicy())
    fresh = recovery.claim("j", B)

    sent: list[str] = []

    def complete() -> None:
        with pytest.raises(StaleClaim) as refused:
            holder.complete(stale, result="late")
        assert (refused.value.token, refused.value.current_token) == (stale.token, fresh.token)

    sent = _sent_by(statements, complete)
    refused = _refused(database_url)
    assert sent[: len(refused)] == refused  # the guarded write went out first ...
    assert "SELECT" in sent[len(refused) :]  # ... was refused, then the job was read
    history = holder.history("j")
    assert [e.type for e in history][-2:] == ["claimed", "rejected"]
    rejected = history[-1]
    assert rejected.process == A
    assert rejected.data["attempted"] == "completed"
    assert (rejected.data["token"], rejected.data["current_token"]) == (stale.token, fresh.token)
    # The stale holder's next write reads at once: its remembered row was dropped.
    with pytest.raises(StaleClaim):
        holder.heartbeat(stale)
    recovery.complete(fresh, result="done")
    assert [e.type for e in holder.history("j")][-3:] == ["rejected", "rejected", "completed"]
    assert holder.status("j").state == "completed"
    assert holder.verify().ok
    holder.close()
    recovery.close()


def test_a_holders_guard_is_its_rows_version_and_last_hash(
    database_url: str, statements: list[str]
) -> None:
    """A remembered row at the right version but with another last hash is not the row in
    the database: the write is refused and the command decides on the row it reads."""
    ledger = Ledger(database_url, heartbeat_interval=0)
    ledger.enqueue("j")
    claim = ledger.claim("j", A)
    remembered = ledger._claimed_rows["j"]
    ledger._claimed_rows["j"] = dataclasses.replace(remembered, last_hash="0" * 64)

    sent = _sent_by(statements, lambda: ledger.complete(claim, result=1))
    assert "SELECT" in sent  # refused, then read
    completed = ledger.history("j")[-1]
    assert (completed.type, completed.prev_hash) == ("completed", remembered.last_hash)
    assert ledger.verify().ok
    ledger.close()


@pytest.mark.parametrize("off_by", [timedelta(hours=1), -timedelta(hours=1), CLOCK_TOLERANCE * 3])
def test_an_unread_write_whose_clock_is_off_stamps_with_the_database_clock(
    database_url: str, statements: list[str], off_by: timedelta
) -> None:
    ledger = Ledger(database_url, heartbeat_interval=0)
    ledger.enqueue("j")
    claim = ledger.claim("j", A)
    jump_clock(ledger, off_by)

    sent = _sent_by(statements, lambda: ledger.heartbeat(claim))
    assert "SELECT" in sent  # refused by the clock guard, then read
    assert abs(ledger.history("j")[-1].recorded_at - _database_now(ledger)) < CLOCK_TOLERANCE
    # The refusal's read measured the clock again: the next write needs no read.
    assert _sent_by(statements, lambda: ledger.complete(claim)) == _unread(database_url)
    history = ledger.history("j")
    assert all(a.recorded_at <= b.recorded_at for a, b in itertools.pairwise(history))
    assert ledger.verify().ok
    ledger.close()


def test_a_throttled_heartbeat_takes_no_write_lock_before_its_read(
    database_url: str, statements: list[str]
) -> None:
    """A decision to write nothing sends no unread write (and on SQLite no ``BEGIN
    IMMEDIATE`` for one): the ordinary command alone reads and validates the claim."""
    ledger = Ledger(database_url, heartbeat_interval=3600)
    ledger.enqueue("j")
    claim = ledger.claim("j", A)
    sent = _sent_by(statements, lambda: ledger.heartbeat(claim))
    read = ["BEGIN IMMEDIATE", "SELECT"] if database_url.startswith("sqlite") else ["SELECT"]
    assert sent == read
    assert [e.type for e in ledger.history("j")] == ["enqueued", "claimed"]
    ledger.close()


def test_an_unread_enqueue_of_an_existing_id_writes_nothing(database_url: str) -> None:
    ledger = Ledger(database_url)
    ledger.enqueue("warm")
    ledger.enqueue("j", data={"n": 1})
    with pytest.raises(DuplicateJob):
        ledger.enqueue("j", data={"n": 2})
    assert [e.data for e in ledger.history("j")] == [{"queue": "default", "data": {"n": 1}}]
    assert ledger.verify().ok
    ledger.close()


def test_the_async_store_sends_the_same_unread_writes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    execute = AsyncStore._execute

    async def counted(self: AsyncStore, conn: Any, sql: str, parameters: Any) -> Any:
        sent.append(sql)
        return await execute(self, conn, sql, parameters)

    monkeypatch.setattr(AsyncStore, "_execute", counted)
    commit = ["COMMIT"] if database_url.startswith("sqlite") else []

    async def story() -> None:
        async with AsyncLedger(database_url, heartbeat_interval=0) as ledger:
            await ledger.enqueue("first")
            row = await ledger.enqueue("j")
            sent.clear()
            claim = await ledger.claim("j", A, seen=row)
            assert [_verb(sql) for sql in sent] == _unread(database_url) + commit
            sent.clear()
            await ledger.heartbeat(claim)
            assert [_verb(sql) for sql in sent] == _unread(database_url) + commit
            # Another process takes the job over: the holder's write is refused, then read.
            async with AsyncLedger(database_url) as other:
                await other.abandon("j", claim.token, "presumed dead", policy=RecoveryPolicy())
                fresh = await other.claim("j", B)
            sent.clear()
            with pytest.raises(StaleClaim):
                await ledger.complete(claim)
            verbs, refused = [_verb(sql) for sql in sent], _refused(database_url)
            assert verbs[: len(refused)] == refused
            assert "SELECT" in verbs[len(refused) :]
            await ledger.complete(fresh)
            history = await ledger.history("j")
            assert [e.type for e in history][-3:] == ["claimed", "rejected", "completed"]
            assert (await ledger.verify()).ok

    asyncio.run(story())


def _database_now(ledger: Ledger) -> datetime:
    clock = "SELECT now()" if ledger.engine.dialect.name == "postgresql" else None
    with ledger.engine.connect() as conn:
        if clock is None:
            raw = conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
            return datetime.fromisoformat(raw).replace(tzinfo=timezone.utc)
        now = conn.execute(text(clock)).scalar_one()
    assert isinstance(now, datetime)
    return now.astimezone(timezone.utc)
