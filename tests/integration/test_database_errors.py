"""Unreachable and unmigrated databases give jobledger errors, not driver tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from jobledger import Ledger
from jobledger.database import engine_for, mask
from jobledger.errors import ConfigurationError, DatabaseUnavailable, SchemaMissing
from jobledger.identity import new_identity
from jobledger.testing import free_port, scratch_database


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
        admin = engine_for(postgres_server_url)
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": url.database},
            )
        admin.dispose()
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
