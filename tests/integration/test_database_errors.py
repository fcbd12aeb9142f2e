"""Unreachable and unmigrated databases give jobledger errors, not driver tracebacks."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from jobledger import Ledger
from jobledger.database import engine_for, mask
from jobledger.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidPayload,
    SchemaMissing,
    UnknownJob,
)
from jobledger.identity import new_identity
from jobledger.testing import free_port, scratch_database
from tests.helpers import terminate_backends


def test_unreachable_postgresql(postgres_server_url: str) -> None:
    ledger = Ledger(f"postgresql://user:hunter2@127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(DatabaseUnavailable) as caught:
        ledger.enqueue("j")
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


def test_unmigrated_sqlite(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'empty.db'}")
    for command in (
        lambda: ledger.enqueue("j"),
        lambda: ledger.status("j"),
        lambda: list(ledger.jobs()),
    ):
        with pytest.raises(SchemaMissing, match="jobledger db upgrade"):
            command()


def test_unmigrated_postgresql(postgres_server_url: str) -> None:
    with scratch_database(postgres_server_url) as url:
        ledger = Ledger(url)
        with pytest.raises(SchemaMissing):
            ledger.claim("j", new_identity())
        ledger.close()


def test_database_dropping_connections_mid_session(postgres_server_url: str) -> None:
    """Our own database's backends are terminated; the next command reconnects."""
    with scratch_database(postgres_server_url) as url:
        ledger = Ledger(url)
        ledger.migrate()
        ledger.enqueue("before")
        terminate_backends(postgres_server_url, url.database)
        ledger.enqueue("after")  # pool_pre_ping replaces the dead connection
        assert [s.job_id for s in ledger.jobs()] == ["after", "before"]
        ledger.close()


@pytest.mark.parametrize("url", ["nonsense", "postgresql://u:pw@/x?bad=1&", "oracle+nodriver://x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises((ConfigurationError, DatabaseUnavailable)) as caught:
        Ledger(url).enqueue("j")
    assert "pw" not in str(caught.value)


def test_mask_hides_passwords() -> None:
    assert mask("postgresql://me:secret@db/x") == "postgresql://me:***@db/x"
    assert "secret" not in mask("not a url://me:secret@db")


# -- values over the database's limits are refused payloads, not outages ------------------


@pytest.fixture
def small_sqlite(tmp_path: Path, sqlite_template: Path) -> Iterator[Ledger]:
    """A SQLite ledger whose connections refuse strings over 10,000 bytes (SQLITE_TOOBIG)."""
    if not hasattr(sqlite3.Connection, "setlimit"):  # Python < 3.11
        pytest.skip("sqlite3.Connection.setlimit needs Python 3.11")
    shutil.copy(sqlite_template, tmp_path / "small.db")
    engine = engine_for(f"sqlite:///{tmp_path / 'small.db'}")
    event.listen(
        engine, "connect", lambda conn, _: conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)
    )
    with Ledger(engine, heartbeat_interval=0) as ledger:
        yield ledger
    engine.dispose()


def test_data_too_large_for_sqlite_is_an_invalid_payload(small_sqlite: Ledger) -> None:
    big = {"blob": "x" * 20_000}
    with pytest.raises(InvalidPayload, match="too large for database"):
        small_sqlite.enqueue("big", data=big)
    with pytest.raises(InvalidPayload, match="too large for database"):
        small_sqlite.enqueue_many([("big", big)])
    with pytest.raises(UnknownJob):
        small_sqlite.status("big")  # nothing was written
    claim = small_sqlite.claim(small_sqlite.enqueue("small").job_id, new_identity())
    with pytest.raises(InvalidPayload, match="too large for database"):
        small_sqlite.fail(claim, error="E" * 20_000)
    assert small_sqlite.status("small").state == "claimed"


@pytest.mark.slow
def test_data_too_large_for_jsonb_is_an_invalid_payload(postgres_url: str) -> None:
    """A JSONB string holds at most 268,435,455 bytes: the smallest payload over a limit."""
    with Ledger(postgres_url) as ledger:
        with pytest.raises(InvalidPayload, match="too large for database") as caught:
            ledger.enqueue("too-big", data={"blob": "x" * 2**28})
        assert "unavailable" not in str(caught.value)
        with pytest.raises(UnknownJob):
            ledger.status("too-big")
