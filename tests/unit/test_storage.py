"""The storage seam: one backend per kind of database, and statements that take one
layout of values whatever the backend."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Dialect, create_engine, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import make_url

from jobledger.chain import GENESIS
from jobledger.records import Event, JobStatus
from jobledger.schema import EVENT_FIELDS, STATUS_FIELDS
from jobledger.storage import backend_for, backend_named, database_clock
from jobledger.storage.driver import DriverStatement
from jobledger.storage.generic import GenericBackend, TwoStatementCommands
from jobledger.storage.postgres import PostgresBackend
from jobledger.storage.rows import write_values
from jobledger.storage.sqlite import SqliteBackend

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def test_each_engine_gets_its_backend_once() -> None:
    engine = create_engine("sqlite://")
    assert isinstance(backend_for(engine), SqliteBackend)
    assert backend_for(engine) is backend_for(engine)
    assert isinstance(backend_named("postgresql"), PostgresBackend)
    other = backend_named("mssql")
    assert type(other) is GenericBackend
    assert other.name == "mssql"


@pytest.mark.parametrize(
    ("name", "dialect", "sql"),
    [
        ("postgresql", postgresql.dialect(), "now()"),
        ("sqlite", sqlite.dialect(), "strftime"),
        ("mysql", mysql.dialect(), "utc_timestamp"),
        ("mssql", sqlite.dialect(), "CURRENT_TIMESTAMP"),
    ],
)
def test_the_database_clock_is_the_backends(name: str, dialect: Dialect, sql: str) -> None:
    compiled = str(select(database_clock(name)).compile(dialect=dialect))
    assert sql in compiled


def test_only_postgresql_commands_autocommit() -> None:
    assert backend_named("postgresql").autocommit_commands
    assert not backend_named("sqlite").autocommit_commands
    assert backend_named("sqlite").begin_command == "BEGIN IMMEDIATE"
    assert backend_named("mssql").begin_command is None


def test_engine_options_are_the_backends() -> None:
    assert backend_named("postgresql").engine_options(make_url("postgresql://h/db")) == {
        "pool_pre_ping": True
    }
    memory = backend_named("sqlite").engine_options(make_url("sqlite://"))
    assert "poolclass" in memory
    on_file = backend_named("sqlite").engine_options(make_url("sqlite:///x.db"))
    assert "poolclass" not in on_file
    assert on_file["connect_args"]["check_same_thread"] is False


def test_a_sqlite_file_that_is_missing_is_named(tmp_path: Path) -> None:
    backend = backend_named("sqlite")
    assert backend.database_is_a_file
    missing = backend.missing_file(make_url(f"sqlite:///{tmp_path}/nothing.db"))
    assert missing is not None
    assert missing.endswith("nothing.db")
    assert backend.missing_file(make_url("sqlite://")) is None
    assert backend_named("postgresql").missing_file(make_url("postgresql://h/db")) is None


def _first_write(data: Any = None) -> tuple[Event, JobStatus]:
    """A new job's first event (carrying ``data``, an enqueue's by default) and row."""
    if data is None:
        data = {"queue": "q", "data": None}
    event = Event(-1, "j", 1, "enqueued", "p", data, NOW, GENESIS, "h" * 64)
    status = JobStatus(
        "j", "q", "enqueued", 1, 0, None, None, NOW, None, None, None, NOW, None, "h" * 64
    )
    return event, status


def _sent(statement: DriverStatement, values: tuple[Any, ...]) -> dict[str, Any]:
    """What ``statement`` sends for ``values``, by bind name."""
    return dict(zip(statement.names, statement.row(values), strict=True))


def test_two_statement_writes_pick_their_values_from_one_layout() -> None:
    """Every command statement takes write_values(); each picks its own table's part."""
    commands = TwoStatementCommands(backend_named("sqlite"), sqlite.dialect())
    event, status = _first_write()
    values = write_values(0, status, event)
    inserted_event = _sent(commands.insert_event, values)
    assert [inserted_event[name] for name in EVENT_FIELDS if name != "data"] == [
        "j",
        1,
        "enqueued",
        "p",
        "2026-01-02 03:04:05.678901",  # as SQLAlchemy stores it on SQLite
        GENESIS,
        "h" * 64,
    ]
    assert inserted_event["tx_id"] is None
    inserted_status = _sent(commands.insert_status, values)
    assert set(inserted_status) == set(STATUS_FIELDS)
    assert (inserted_status["job_id"], inserted_status["last_hash"]) == ("j", "h" * 64)
    guarded = _sent(commands.guarded_update, values)
    assert (guarded["expected"], guarded["j_job_id"], guarded["j_state"]) == (0, "j", "enqueued")


def test_command_statements_are_named_for_the_benchmarks() -> None:
    sqlite_names = TwoStatementCommands(backend_named("sqlite"), sqlite.dialect()).by_name()
    assert list(sqlite_names) == ["load", "guarded_update", "insert_event", "insert_status"]
    pg = backend_named("postgresql").commands(postgresql.dialect())
    assert list(pg.by_name()) == [
        "load",
        "pg_append",
        "pg_append_unread",
        "pg_create",
        "pg_create_unread",
        "batch_clock",
        "jobs_rows",
        "events_rows",
    ]
    assert pg.append_unread is pg.by_name()["pg_append_unread"]
    assert pg.create_unread is pg.by_name()["pg_create_unread"]
    assert TwoStatementCommands(backend_named("sqlite"), sqlite.dialect()).append_unread is None


@pytest.mark.parametrize(
    "data",
    [
        {"attempt": 1},
        {"result": None},
        {"b": [1, 2.5, -0.0, True, None], "a": {"z": '\u00e9\n\u2028"\\', "y": 10**30}},
        {"markup": "<script>alert(1)</script>", "nested": [[[{"k": ""}]]]},
        {},
    ],
)
def test_sqlite_event_data_is_stored_as_sqlalchemy_would_store_it(data: Any) -> None:
    """The event insert's data bind (a C encoder made once) writes json.dumps' text."""
    commands = backend_named("sqlite").commands(sqlite.dialect())
    event, status = _first_write(data)
    sent = _sent(commands.insert_event, write_values(0, status, event))
    assert sent["data"] == json.dumps(data)
    assert not commands.insert_event.returns_rows  # the position is the cursor's lastrowid


@pytest.mark.parametrize(
    "data",
    [
        {"attempt": 1},
        {"b": [1, 2.5, -0.0, True, None], "a": {"z": '\u00e9\n\u2028"\\', "y": 10**30}},
        {},
    ],
)
def test_postgresql_event_data_is_sent_as_the_json_text_psycopg_would_send(data: Any) -> None:
    """Text, cast to JSONB by the statement: what psycopg's Jsonb wrapper would send, once."""
    dialect = create_engine("postgresql+psycopg://").dialect
    append = backend_named("postgresql").commands(dialect).by_name()["pg_append"]
    event, status = _first_write(data)
    sent = _sent(append, write_values(0, status, event))
    assert sent["e_data"] == json.dumps(data)  # psycopg's Jsonb dumper: json.dumps(obj)
    assert "%s::JSONB" in append.sql
