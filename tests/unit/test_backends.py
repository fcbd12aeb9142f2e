"""What each backend does its own way for catch-up, lease stores and the audit.

The callers (``jobledger.catchup``, ``jobledger.liveness.sql``, ``jobledger.audit``)
ask :func:`~jobledger.storage.backend_for` instead of testing the dialect's name;
these pin what each backend answers.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest
from sqlalchemy import Dialect, create_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from jobledger.audit.bulk import Bulk, CoreBulk
from jobledger.audit.events import StoredEvent, event_query
from jobledger.audit.postgres import PostgresBulk
from jobledger.audit.session import ADAPTERS
from jobledger.audit.sqlite import SqliteBulk
from jobledger.errors import ConfigurationError
from jobledger.storage import BulkAccess, backend_for, backend_named

ROW = (7, "job", 2, "claimed", "worker")
HASHES = ("prev", "hash")


def test_only_sqlite_has_one_write_lock_and_a_lease_file() -> None:
    sqlite_backend = backend_named("sqlite")
    assert sqlite_backend.one_write_lock
    assert not backend_named("postgresql").one_write_lock
    assert not backend_named("mssql").one_write_lock
    leases = sqlite_backend.lease_url(make_url("sqlite:////tmp/ledger.db"))
    assert leases is not None
    assert leases.database == "/tmp/ledger.db-leases"
    assert sqlite_backend.lease_url(make_url("sqlite://")) is None
    assert sqlite_backend.lease_url(make_url("sqlite:///file:x?mode=memory&uri=true")) is None
    assert backend_named("postgresql").lease_url(make_url("postgresql://h/db")) is None


def test_catch_up_reads_by_transaction_id_only_on_postgresql() -> None:
    pg, lite = backend_named("postgresql"), backend_named("sqlite")
    assert (pg.initial_checkpoint_tx, lite.initial_checkpoint_tx) == (0, None)
    pending = str(pg.pending_events_query().compile(dialect=postgresql.dialect()))
    assert "pg_snapshot_xmin" in pending
    assert "pg_snapshot_xmin" in str(pg.held_back_query().compile(dialect=postgresql.dialect()))
    assert pg.oldest_writer_query() is not None
    by_position = str(lite.pending_events_query().compile(dialect=sqlite.dialect()))
    assert "ORDER BY jobledger_events.position" in by_position
    assert lite.held_back_query() is None
    assert lite.oldest_writer_query() is None


def test_catch_up_refuses_other_databases() -> None:
    with pytest.raises(ConfigurationError, match="not mssql"):
        backend_named("mssql").pending_events_query()


def test_each_backend_says_how_the_audit_reads_in_bulk() -> None:
    def adapter(name: str, dialect: Dialect) -> type[Bulk]:
        return ADAPTERS[backend_named(name).bulk_access(dialect)]

    assert adapter("sqlite", sqlite.dialect()) is SqliteBulk
    assert adapter("postgresql", postgresql.psycopg.dialect()) is PostgresBulk
    other_driver = postgresql.psycopg2.dialect()  # no COPY path: through SQLAlchemy
    assert adapter("postgresql", other_driver) is CoreBulk
    assert adapter("mssql", sqlite.dialect()) is CoreBulk
    assert set(ADAPTERS) == set(BulkAccess)
    assert not PostgresBulk.reads_while_writing
    assert SqliteBulk.reads_while_writing
    assert CoreBulk.reads_while_writing


def test_replay_decodes_what_each_backend_hands_over() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    from_sqlite = backend_named("sqlite").stored_event()(
        (*ROW, '{"a": [1]}', "2026-01-02 03:04:05.678901", *HASHES)
    )
    from_postgres = backend_named("postgresql").stored_event()(
        (*ROW, '{"a": [1]}', moment, *HASHES)
    )
    expected = StoredEvent(*ROW, {"a": [1]}, moment, *HASHES)
    assert from_sqlite == from_postgres == expected
    assert type(from_sqlite) is type(from_postgres) is StoredEvent
    not_json = backend_named("sqlite").stored_event()(
        (*ROW, "{not json", "2026-01-02 03:04:05.678901", *HASHES)
    )
    assert not_json.data == "{not json"  # left for the fold to report as corrupt
    generic = backend_named("mssql").stored_event()((*ROW, {"a": 1}, moment, *HASHES))
    assert generic == StoredEvent(*ROW, {"a": 1}, moment, *HASHES)


def test_replay_selects_text_where_decoding_it_is_cheaper() -> None:
    pg = str(event_query(backend_named("postgresql")).compile(dialect=postgresql.dialect()))
    assert "CAST(jobledger_events.data AS TEXT)" in pg
    generic = str(event_query(backend_named("mssql")).compile(dialect=sqlite.dialect()))
    assert "CAST" not in generic
    assert backend_for(create_engine("sqlite://")) is backend_named("sqlite")


def test_storage_imports_no_audit_module() -> None:
    """The audit is a layer above storage (tests/unit/test_layers.py checks the imports)."""
    code = (
        "import sys, jobledger.storage, jobledger.catchup, jobledger.liveness.sql; "
        "print(sorted(m for m in sys.modules if m.startswith('jobledger.audit')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
