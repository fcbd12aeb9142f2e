"""Where SQL leases live, and why: never behind a lock the ledger's writers hold."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from jobledger import Ledger, SqlLiveness
from jobledger.errors import LivenessUnavailable, SchemaMissing
from jobledger.liveness.sql import lease_url
from jobledger.schema import processes
from tests.helpers import info

HoldLock = Callable[[str, float], None]


@pytest.fixture
def write_lock() -> Iterator[HoldLock]:
    """``hold(path, seconds)``: another connection takes ``path``'s write lock for a while."""
    threads: list[threading.Thread] = []

    def hold(path: str, seconds: float) -> None:
        locked = threading.Event()

        def run() -> None:
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(seconds)
            connection.execute("COMMIT")
            connection.close()

        threads.append(threading.Thread(target=run))
        threads[-1].start()
        assert locked.wait(5)

    yield hold
    for thread in threads:
        thread.join()


def _lease_rows(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(processes)).scalar_one())


def test_sqlite_leases_live_in_a_file_beside_the_ledger(sqlite_ledger: Ledger) -> None:
    ledger_file = sqlite_ledger.engine.url.database
    liveness = SqlLiveness(sqlite_ledger, ttl=5)
    me = info()
    liveness.register(me)  # creates the lease file and its table
    assert str(liveness.engine.url.database) == f"{ledger_file}-leases"
    assert Path(f"{ledger_file}-leases").is_file()
    assert "ledger.db-leases" in repr(liveness)
    assert _lease_rows(sqlite_ledger) == 0  # the ledger's own lease table is not used
    other_process = SqlLiveness(sqlite_ledger.engine.url.render_as_string(), ttl=5)
    assert other_process.alive([me.identity]) == {me.identity: True}
    other_process.close()
    liveness.close()


def test_a_ledger_writer_does_not_hold_up_lease_writes(
    sqlite_ledger: Ledger,
    write_lock: HoldLock,
) -> None:
    liveness = SqlLiveness(sqlite_ledger, ttl=1)
    me = info()
    liveness.register(me)
    write_lock(str(sqlite_ledger.engine.url.database), 2.0)
    started = time.monotonic()
    assert liveness.refresh(me) is True
    assert liveness.alive([me.identity]) == {me.identity: True}
    assert time.monotonic() - started < 1.0  # not the 2 s the ledger's writer holds its lock
    liveness.close()


def test_a_blocked_lease_store_is_not_trusted_for_one_ttl(
    sqlite_ledger: Ledger,
    write_lock: HoldLock,
) -> None:
    liveness = SqlLiveness(sqlite_ledger, ttl=1)
    me = info()
    liveness.register(me)
    write_lock(str(liveness.engine.url.database), 1.5)  # past the TTL: the lease lapses
    with pytest.raises(LivenessUnavailable, match="not trusted"):
        liveness.remaining([me.identity])  # waited for the lock, then saw the lease lapsed
    with pytest.raises(LivenessUnavailable, match="not trusted"):
        liveness.alive([me.identity])
    time.sleep(1.1)  # one TTL after the store took writes again, lapses are real again
    assert liveness.alive([me.identity]) == {me.identity: False}
    liveness.close()


def test_in_memory_and_server_ledgers_keep_leases_in_their_own_database() -> None:
    assert lease_url(make_url("sqlite://")) is None
    assert lease_url(make_url("sqlite:///:memory:")) is None
    assert lease_url(make_url("sqlite:///file:x?mode=memory&cache=shared&uri=true")) is None
    assert lease_url(make_url("postgresql+psycopg://localhost/test")) is None
    assert (
        str(lease_url(make_url("sqlite:////var/lib/jobs.db")))
        == "sqlite:////var/lib/jobs.db-leases"
    )
    with Ledger("sqlite://") as ledger:
        ledger.migrate()
        liveness = SqlLiveness(ledger, ttl=5)
        me = info()
        liveness.register(me)
        assert liveness.engine is ledger.engine
        assert _lease_rows(ledger) == 1


def test_leases_can_be_put_elsewhere(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    elsewhere = f"sqlite:///{tmp_path / 'shared-leases.db'}"
    liveness = SqlLiveness(sqlite_ledger, ttl=5, leases=elsewhere)
    me = info()
    liveness.register(me)
    assert SqlLiveness(sqlite_ledger, ttl=5, leases=elsewhere).alive([me.identity])[me.identity]
    assert not SqlLiveness(sqlite_ledger, ttl=5).alive([me.identity])[me.identity]
    liveness.close()


def test_postgres_lease_writes_pass_a_rebuilds_table_lock(postgres_url: str) -> None:
    with Ledger(postgres_url) as ledger, ledger.engine.connect() as rebuild:
        liveness = SqlLiveness(ledger, ttl=5)
        assert liveness.engine is ledger.engine  # PostgreSQL locks rows: one database
        rebuild.exec_driver_sql("LOCK TABLE jobledger_jobs IN SHARE ROW EXCLUSIVE MODE")
        me = info()
        done = threading.Event()

        def register_and_refresh() -> None:
            liveness.register(me)
            liveness.refresh(me)
            liveness.unregister(me.identity)
            done.set()

        writer = threading.Thread(target=register_and_refresh, daemon=True)
        writer.start()
        assert done.wait(5), "lease writes waited for the rebuild's lock"
        rebuild.rollback()


def test_lease_file_is_made_beside_an_existing_ledger_only(
    sqlite_ledger: Ledger, tmp_path: Path
) -> None:
    """Connections never create a missing SQLite file, but the lease file is the ledger's
    companion: made on first use beside a ledger that exists, never beside a missing one."""
    leases_file = Path(f"{sqlite_ledger.engine.url.database}-leases")
    assert not leases_file.exists()
    liveness = SqlLiveness(sqlite_ledger, ttl=1.0)
    process = info()
    liveness.register(process)
    assert leases_file.exists()
    assert liveness.alive([process.identity]) == {process.identity: True}
    liveness.close()

    missing = tmp_path / "nowhere.db"
    nowhere = SqlLiveness(f"sqlite:///{missing}", ttl=1.0)
    with pytest.raises(SchemaMissing):
        nowhere.register(info())
    nowhere.close()
    assert not missing.exists()
    assert not Path(f"{missing}-leases").exists()


def _connections_named(ledger: Ledger, name: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s"
    with ledger.engine.connect() as conn:
        return int(conn.exec_driver_sql(query, {"name": name}).scalar_one())


def test_a_lease_store_made_from_a_url_closes_its_connections(postgres_url: str) -> None:
    name = f"jobledger-leases-{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_url).update_query_dict({"application_name": name})
    liveness = SqlLiveness(url.render_as_string(hide_password=False), ttl=5)
    me = info()
    liveness.register(me)
    liveness.unregister(me.identity)
    with Ledger(postgres_url) as ledger:
        assert _connections_named(ledger, name) == 1  # pooled, kept for the next write
        liveness.close()
        deadline = time.monotonic() + 5
        while _connections_named(ledger, name) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _connections_named(ledger, name) == 0


def test_a_lease_store_as_a_context_manager_disposes_only_what_it_made(
    sqlite_ledger: Ledger,
) -> None:
    closed: list[str] = []
    event.listen(sqlite_ledger.engine, "close", lambda *_: closed.append("ledger"))
    with SqlLiveness(sqlite_ledger, ttl=5) as liveness:
        assert liveness.engine is not sqlite_ledger.engine  # made for the lease file
        event.listen(liveness.engine, "close", lambda *_: closed.append("leases"))
        liveness.register(info())
    assert closed == ["leases"]  # the lease file's connection closed with the block; the
    # ledger's, given by the caller, is the caller's to close
