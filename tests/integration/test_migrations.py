"""``alembic upgrade head`` produces exactly the schema in jobledger.schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from jobledger import Ledger, migrate
from jobledger.schema import VERSION_TABLE, metadata
from jobledger.testing import scratch_database


def _drift(ledger: Ledger) -> list[object]:
    with ledger.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, metadata))


def _check(ledger: Ledger) -> None:
    assert migrate.current(ledger.engine) is None
    ledger.migrate()
    assert migrate.current(ledger.engine) == migrate.head()
    assert _drift(ledger) == []
    tables = set(inspect(ledger.engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} | {VERSION_TABLE} == tables
    ledger.migrate()  # a second upgrade is a no-op
    assert _drift(ledger) == []


def test_sqlite_schema_matches_metadata(tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path / 'fresh.db'}") as ledger:
        _check(ledger)


def test_postgresql_schema_matches_metadata(postgres_server_url: str) -> None:
    with scratch_database(postgres_server_url) as url:
        ledger = Ledger(url)
        _check(ledger)
        columns = {
            c["name"]: c["type"] for c in inspect(ledger.engine).get_columns("jobledger_events")
        }
        assert type(columns["data"]).__name__ == "JSONB"
        assert type(columns["tx_id"]).__name__ == "Xid8"
        assert columns["recorded_at"].timezone is True
        ledger.close()


def test_drift_is_detected(tmp_path: Path) -> None:
    """The drift check itself can fail: drop an index and it notices."""
    with Ledger(f"sqlite:///{tmp_path / 'x.db'}") as ledger:
        ledger.migrate()
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_jobledger_jobs_claimed_by")
        assert _drift(ledger) != []


@pytest.mark.parametrize("table", [t.name for t in metadata.sorted_tables])
def test_every_table_has_a_primary_key(table: str) -> None:
    assert metadata.tables[table].primary_key.columns
