"""The command hot path: held DBAPI connections, compiled statements, COPY batches.

Commands bypass SQLAlchemy's execution layer and keep connections checked out
between calls; batches on PostgreSQL go in with COPY. These tests pin down what
that must not change: connections go back, refusals leave no transaction open,
threads can share a Ledger, a fork never reuses the parent's sessions, and rows
written by COPY are exactly what the INSERTs wrote.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import text

from jobledger import Ledger
from jobledger.chain import event_hash
from jobledger.database import HeldConnections, engine_for
from jobledger.errors import InvalidTransition
from jobledger.identity import new_identity
from jobledger.projection import fold_all
from tests.conftest import truncate_all

A = new_identity("host-a")


def test_close_returns_held_connections_to_a_shared_engine(database_url: str) -> None:
    engine = engine_for(database_url)
    ledger = Ledger(engine)
    ledger.enqueue("j")
    ledger.complete(ledger.claim("j", A))
    ledger.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


def test_a_refused_command_leaves_no_transaction_open(ledger: Ledger, database_url: str) -> None:
    ledger.enqueue("j")
    ledger.cancel("j")
    with pytest.raises(InvalidTransition):
        ledger.cancel("j")
    if database_url.startswith("sqlite"):
        # Another writer gets the write lock at once: the refused command rolled back.
        other = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=0.5)
        other.isolation_level = None
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()
    else:
        with ledger.engine.connect() as conn:
            open_transactions = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
            ).scalar_one()
        assert open_transactions == 0
    assert [e.type for e in ledger.history("j")] == ["enqueued", "cancelled"]


def test_threads_can_share_a_ledger(ledger: Ledger) -> None:
    ids = [[f"t{t}-{n}" for n in range(25)] for t in range(4)]
    ledger.enqueue_many([job_id for chunk in ids for job_id in chunk])
    errors: list[BaseException] = []

    def work(chunk: list[str]) -> None:
        try:
            for job_id in chunk:
                ledger.complete(ledger.claim(job_id, A))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {s.state for s in ledger.jobs()} == {"completed"}
    assert all(len(ledger.history(job_id)) == 3 for chunk in ids for job_id in chunk)


def test_commands_reconnect_after_every_session_is_terminated(postgres_url: str) -> None:
    truncate_all(postgres_url)
    with Ledger(postgres_url) as ledger:
        ledger.enqueue_many(["a", "b", "c"])
        for job_id in ("a", "b", "c"):
            _terminate_other_sessions(postgres_url)
            ledger.complete(ledger.claim(job_id, A))
        assert {s.state for s in ledger.jobs()} == {"completed"}


def _terminate_other_sessions(url: str) -> None:
    admin = engine_for(url)
    with admin.begin() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    admin.dispose()


def test_a_forked_child_never_uses_the_parents_connections(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(database_url)
    held = HeldConnections(engine, autocommit=engine.dialect.name == "postgresql")
    parents, _ = held.take()
    held.give_back(parents)
    monkeypatch.setattr("jobledger.database.os.getpid", lambda: -1)  # "we are the child now"
    childs, was_held = held.take()
    assert not was_held
    assert childs.dbapi_connection is not parents.dbapi_connection
    held.give_back(childs)
    monkeypatch.undo()
    held.close()
    parents.close()  # the test's stand-in parent returns its own connection
    engine.dispose()


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "insert"])
def test_batched_rows_read_back_exactly(postgres_url: str, copy: bool) -> None:
    """COPY and INSERT store the same thing: every hash re-checks, tx_id is the writer's xid."""
    truncate_all(postgres_url)
    with Ledger(postgres_url, batch_size=2) as ledger:
        ledger._store._copies_batches = copy
        data = {"text": 'é\t\\n "q"', "n": [1, 2.5, None, True], "nested": {"k": {}}}
        # (A tab may no longer be in a new id, jobledger.names; the data's tab goes through COPY.)
        ledger.enqueue_many(["plain", ("with-data", data), ("back\\slash", [])], queue="q\\1")
        for job_id in ("plain", "with-data", "back\\slash"):
            history = ledger.history(job_id)
            (event,) = history
            assert event.hash == event_hash(
                event.prev_hash,
                event.job_id,
                event.version,
                event.type,
                event.process,
                event.data,
                event.recorded_at,
            )
            assert ledger.status(job_id) == fold_all(history)
        assert ledger.history("with-data")[0].data == {"queue": "q\\1", "data": data}
        with ledger.engine.connect() as conn:
            mismatched = conn.execute(
                text(
                    "SELECT count(*) FROM jobledger_events "
                    "WHERE tx_id::text::numeric % 4294967296 <> xmin::text::numeric"
                )
            ).scalar_one()
        assert mismatched == 0


def test_command_statements_are_the_sql_a_command_sends(ledger: Ledger) -> None:
    """The benchmarks' raw baseline runs exactly these texts with these bind names."""
    statements = ledger._store.command_statements()
    assert "load" in statements
    for statement in statements.values():
        assert isinstance(statement.sql, str)
        assert statement.sql.lstrip().split()[0].upper() in ("SELECT", "WITH", "UPDATE", "INSERT")
        assert all(isinstance(name, str) for name in statement.names)
