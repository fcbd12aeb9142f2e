"""A holder's heartbeat, complete, fail and release: one round trip on PostgreSQL.

The Ledger keeps the row it last wrote for a job it saw claimed, so a holder's
next write goes out at once, guarded by that row's version and by the database
clock. These tests pin down that the guard is what keeps every guarantee: a
claim taken away by another process, a clock that is off, and a connection that
died all fall back to the ordinary read-decide-write, and the history stays a
sealed, legal chain.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from jobledger import Ledger, RecoveryPolicy
from jobledger.errors import StaleClaim
from jobledger.identity import new_identity
from jobledger.store import CLOCK_TOLERANCE
from jobledger.testing import scratch_database
from tests.helpers import jump_clock, terminate_backends

A, B = new_identity("host-a"), new_identity("host-b")


def _one_statement_each(sent: list[str], command: Callable[[], object]) -> None:
    sent.clear()
    command()
    assert len(sent) == 1, sent
    assert sent[0].lstrip().upper().startswith("WITH"), sent[0]  # the guarded write, no read


def test_a_holders_writes_are_one_statement_each(pg_url: str, statements: list[str]) -> None:
    ledger = Ledger(pg_url, heartbeat_interval=0)
    for job in ("done", "broken", "given-back"):
        ledger.enqueue(job)
    done, broken, given_back = (ledger.claim(job, A) for job in ("done", "broken", "given-back"))
    _one_statement_each(statements, lambda: ledger.heartbeat(done, progress=1))
    _one_statement_each(statements, lambda: ledger.heartbeat(done, progress=2))
    _one_statement_each(statements, lambda: ledger.complete(done, result="ok"))
    _one_statement_each(statements, lambda: ledger.fail(broken, error="boom"))
    _one_statement_each(statements, lambda: ledger.release(given_back, reason="stopping"))
    assert [e.type for e in ledger.history("done")] == [
        "enqueued",
        "claimed",
        "heartbeat",
        "heartbeat",
        "completed",
    ]
    assert ledger.status("broken").last_error == "boom"
    assert ledger.status("given-back").state == "enqueued"
    assert ledger.verify().ok
    # Versions and timestamps of the unread writes follow the chain.
    history = ledger.history("done")
    assert [e.version for e in history] == [1, 2, 3, 4, 5]
    assert all(a.recorded_at <= b.recorded_at for a, b in itertools.pairwise(history))
    ledger.close()


def test_a_claim_taken_away_by_another_ledger_is_refused_and_recorded(
    database_url: str, statements: list[str]
) -> None:
    """The holder's remembered row is out of date: its write is refused by the version
    guard, then the ordinary command reads the job and records the rejection."""
    holder, recovery = Ledger(database_url, heartbeat_interval=0), Ledger(database_url)
    holder.enqueue("j")
    stale = holder.claim("j", A)
    recovery.abandon("j", stale.token, "holder presumed dead", policy=RecoveryPolicy())
    fresh = recovery.claim("j", B)

    for command in (
        lambda: holder.heartbeat(stale),
        lambda: holder.complete(stale, result="late"),
    ):
        with pytest.raises(StaleClaim):
            command()
    recovery.complete(fresh, result="done")
    history = holder.history("j")
    assert [e.type for e in history] == [
        "enqueued",
        "claimed",
        "abandoned",
        "requeued",
        "claimed",
        "rejected",
        "rejected",
        "completed",
    ]
    assert history[5].process == A
    assert history[5].data["attempted"] == "heartbeat"
    assert history[7].process == B
    assert holder.status("j").state == "completed"
    assert holder.verify().ok
    holder.close()
    recovery.close()


@pytest.mark.parametrize("off_by", [timedelta(hours=1), -timedelta(hours=1), CLOCK_TOLERANCE * 3])
def test_a_holder_whose_clock_is_off_stamps_with_the_database_clock(
    pg_url: str, statements: list[str], off_by: timedelta
) -> None:
    ledger = Ledger(pg_url, heartbeat_interval=0)
    ledger.enqueue("j")
    claim = ledger.claim("j", A)
    jump_clock(ledger, off_by)

    ledger.heartbeat(claim)
    assert abs(ledger.history("j")[-1].recorded_at - _database_now(ledger)) < CLOCK_TOLERANCE
    if off_by > CLOCK_TOLERANCE:  # a time ahead of the database's is never written
        assert len(statements) >= 3  # claim: read, write; refused unread write, read, write
    # The refusal's read measured the clock again: the next write needs no read.
    statements.clear()
    ledger.complete(claim)
    assert len(statements) == 1
    assert abs(ledger.history("j")[-1].recorded_at - _database_now(ledger)) < CLOCK_TOLERANCE
    history = ledger.history("j")
    assert all(a.recorded_at <= b.recorded_at for a, b in itertools.pairwise(history))
    assert ledger.verify().ok
    ledger.close()


def test_a_holder_whose_connection_died_reconnects(postgres_server_url: str) -> None:
    with scratch_database(postgres_server_url) as url:
        ledger = Ledger(url, heartbeat_interval=0)
        ledger.migrate()
        ledger.enqueue("j")
        claim = ledger.claim("j", A)
        terminate_backends(postgres_server_url, url.database)
        ledger.heartbeat(claim)  # the unread write meets a dead connection; the command retries
        ledger.complete(claim)
        assert [e.type for e in ledger.history("j")] == [
            "enqueued",
            "claimed",
            "heartbeat",
            "completed",
        ]
        assert ledger.verify().ok
        ledger.close()


def _database_now(ledger: Ledger) -> datetime:
    with ledger.engine.connect() as conn:
        now = conn.execute(text("SELECT now()")).scalar_one()
    assert isinstance(now, datetime)
    return now.astimezone(timezone.utc)
