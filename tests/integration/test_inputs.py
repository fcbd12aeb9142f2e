"""Inputs the ledger must refuse before writing, or read without harm, on both backends.

Job ids and queue names (jobledger.names), payloads too deep or with integers too
long to round-trip, replay instants past the calendar, databases that are missing
or have no schema, and enqueue_many that stops part-way and resumes.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from jobledger import Ledger, audit, migrate, names
from jobledger.audit import verify_export
from jobledger.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DuplicateJob,
    InvalidJobId,
    InvalidPayload,
    SchemaMissing,
)
from jobledger.identity import new_identity
from jobledger.liveness import RedisLiveness
from jobledger.schema import events
from jobledger.testing import scratch_database

A = new_identity()


def _event_count(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# -- job ids and queue names -------------------------------------------------------------

QUESTIONABLE = ["  ", "\t", "job\t1", "job\n1", "job\x1b[2J", "job\u2028", "\u202ejob", " job-1"]


@pytest.mark.parametrize("bad", [*QUESTIONABLE, "bad\udcffid"])
def test_questionable_ids_and_queues_are_refused_on_every_write_path(
    ledger: Ledger, bad: str
) -> None:
    with pytest.raises(InvalidJobId):
        ledger.enqueue(bad)
    with pytest.raises(InvalidJobId):
        ledger.enqueue("fine", queue=bad)
    with pytest.raises(InvalidJobId):
        ledger.enqueue_many(["ok-1", bad, "ok-2"])
    with pytest.raises(InvalidJobId):
        ledger.enqueue_many([("ok-1", None), (bad, {"a": 1})])
    with pytest.raises(InvalidJobId):
        ledger.enqueue_many(["ok-1"], queue=bad)
    assert _event_count(ledger) == 0


def test_rq_queue_names_follow_the_same_rule(ledger: Ledger, redis_url: str) -> None:
    """RQ checks its job ids itself, not its queue names: LedgerQueue refuses before RQ writes."""
    import redis

    from jobledger.integrations.rq import LedgerQueue

    connection = redis.Redis.from_url(redis_url)
    name = f"jobledger-test-{os.getpid()}\tq"
    queue = LedgerQueue(name, connection=connection, ledger=ledger)
    try:
        with pytest.raises(InvalidJobId, match="queue"):
            queue.enqueue("tests.faults.rq_jobs.quick", 1)
        assert queue.count == 0
        assert _event_count(ledger) == 0
    finally:
        queue.delete(delete_jobs=True)
        connection.close()


def test_printable_unicode_with_inner_spaces_is_accepted(ledger: Ledger) -> None:
    ledger.enqueue("rapport été 📦", queue="file d'attente")
    assert ledger.status("rapport été 📦").queue == "file d'attente"


@pytest.mark.parametrize("impossible", ["bad\udcffid", "nul\x00id"])
def test_looking_up_an_id_no_database_can_hold_is_a_clear_error(
    ledger: Ledger, impossible: str
) -> None:
    """Before: UnicodeEncodeError (or a driver error for NUL) from deep inside the driver."""
    for lookup in (
        lambda: ledger.status(impossible),
        lambda: ledger.history(impossible),
        lambda: ledger.claim(impossible, A),
        lambda: ledger.requeue(impossible),
        lambda: ledger.cancel(impossible),
        lambda: ledger.abandon(impossible, token=1, reason="r"),
        lambda: list(ledger.jobs(queue=impossible)),
        lambda: audit.replay(ledger.engine, None, impossible),
    ):
        with pytest.raises(InvalidJobId):
            lookup()


def test_ids_stored_before_the_rule_still_work(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Existing ids are not migrated: every read and every later command still takes them."""
    legacy = "legacy\tid "
    with monkeypatch.context() as old_rules:
        old_rules.setattr(names, "checked_new", lambda value, what="job id": value)
        ledger.enqueue(legacy, queue="old\nqueue")
    claim = ledger.claim(legacy, A)
    ledger.complete(claim)
    assert ledger.status(legacy).state == "completed"
    assert [e.type for e in ledger.history(legacy)] == ["enqueued", "claimed", "completed"]
    assert [s.job_id for s in ledger.jobs(queue="old\nqueue")] == [legacy]
    assert ledger.verify().ok


# -- payloads ----------------------------------------------------------------------------


def test_nesting_is_limited_the_same_on_both_backends(ledger: Ledger) -> None:
    deepest = _nested(100)
    ledger.enqueue("deep", data=deepest)
    assert ledger.history("deep")[0].data["data"] == deepest
    for too_deep in (_nested(101), _nested(600)):
        with pytest.raises(InvalidPayload, match="nested more than 100 levels"):
            ledger.enqueue("deeper", data=too_deep)
        with pytest.raises(InvalidPayload, match="nested more than 100 levels"):
            ledger.enqueue_many([("deeper", too_deep)])
    claim = ledger.claim("deep", A)
    with pytest.raises(InvalidPayload):
        ledger.complete(claim, result=_nested(101))
    ledger.complete(claim, result=deepest)
    assert ledger.verify().ok


def test_integers_round_trip_up_to_the_limit_and_are_refused_beyond(ledger: Ledger) -> None:
    """JSONB keeps numbers of up to 131,072 digits exactly; Python reads 4,300 by default."""
    longest = -(10**4300 - 1)
    ledger.enqueue("big", data={"n": longest, "m": 2**200})
    stored = ledger.history("big")[0].data["data"]
    assert stored == {"n": longest, "m": 2**200}
    assert type(stored["n"]) is int
    for too_long in (10**4300, -(10**4300), 10**5000):
        with pytest.raises(InvalidPayload, match="more than 4300 digits"):
            ledger.enqueue("bigger", data={"n": too_long})
        with pytest.raises(InvalidPayload, match="more than 4300 digits"):
            ledger.enqueue_many([("bigger", [too_long])])
    assert _event_count(ledger) == 1
    assert ledger.verify().ok
    out = io.StringIO()
    ledger.export(out)
    assert verify_export(io.StringIO(out.getvalue())).ok


# -- replay at instants past the calendar ------------------------------------------------


def test_replay_at_the_ends_of_the_calendar(ledger: Ledger) -> None:
    """Before: OverflowError converting 9999-12-31T23:59:59-01:00 to UTC."""
    from datetime import datetime

    ledger.enqueue("j")
    latest = datetime.fromisoformat("9999-12-31T23:59:59-01:00")
    earliest = datetime.fromisoformat("0001-01-01T00:00:00+01:00")
    assert set(ledger.replay(until=latest)) == {"j"}
    assert ledger.replay(until=earliest) == {}


# -- databases that are missing, or have no schema ---------------------------------------


def test_reading_a_missing_sqlite_file_refuses_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with Ledger(f"sqlite:///{path}") as ledger:
        for read in (
            lambda: ledger.status("j"),
            lambda: list(ledger.jobs()),
            ledger.verify,
            lambda: ledger.export(io.StringIO()),
            lambda: ledger.enqueue("j"),
        ):
            with pytest.raises(SchemaMissing, match=r"does not exist.*jobledger db upgrade"):
                read()
        assert migrate.current(ledger.engine) is None
        assert not path.exists()
        ledger.migrate()  # the one command that creates it
        assert path.exists()
        ledger.enqueue("j")
    assert os.listdir(tmp_path) == ["typo.db"]  # no WAL files left once closed


def test_export_of_a_database_without_the_schema(postgres_server_url: str, tmp_path: Path) -> None:
    """Before: psycopg's raw UndefinedTable (the COPY runs on the driver directly)."""
    with (
        scratch_database(postgres_server_url) as url,
        Ledger(url) as ledger,
        pytest.raises(SchemaMissing, match="jobledger db upgrade"),
    ):
        ledger.export(io.StringIO())
    empty = tmp_path / "empty.db"
    empty.touch()
    with Ledger(f"sqlite:///{empty}") as ledger, pytest.raises(SchemaMissing):
        ledger.export(io.StringIO())


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost:notaport/test",
        "postgresql://[::1:5432/test",
        "sqlite://localhost:notaport/x.db",
    ],
)
def test_a_database_url_with_a_bad_port_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not a database URL"):
        Ledger(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://localhost:notaport/15", "Port could not be cast"),
        ("redis://[::1:6379/15", "Invalid IPv6 URL"),
        ("redis://localhost:6379/notadb", "must be a database number"),
        ("redis://:hunter2@localhost:6379/db1", "must be a database number"),
        ("rediss://localhost:6379/1x", "must be a database number"),
    ],
)
def test_a_bad_redis_url_is_a_configuration_error(url: str, reason: str) -> None:
    """Before: /notadb silently meant database 0, and a bad port raised later, raw."""
    with pytest.raises(ConfigurationError, match=reason) as caught:
        RedisLiveness(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379", "redis://localhost:6379/", "redis://h/15"]
)
def test_good_redis_urls_are_taken(url: str) -> None:
    RedisLiveness(url).close()  # constructing does not connect


# -- enqueue_many: how far it got, and resuming ------------------------------------------


def test_resuming_with_skip_existing(database_url: str) -> None:
    with Ledger(database_url, batch_size=100) as ledger:
        ledger.enqueue("job-0250", data={"n": 250})  # makes the first run stop in batch 3
        specs = [(f"job-{i:04d}", {"n": i}) for i in range(300)]
        with pytest.raises(DuplicateJob) as caught:
            ledger.enqueue_many(specs, queue="default")
        assert caught.value.committed == 200
        assert ledger.enqueue_many(specs, skip_existing=True) == 99  # all but 0-199 and 250
        assert _event_count(ledger) == 300
        assert ledger.enqueue_many(specs, skip_existing=True) == 0  # a third run: nothing new
        assert ledger.verify().ok


def test_skip_existing_still_refuses_an_id_with_other_data_or_queue(ledger: Ledger) -> None:
    ledger.enqueue_many([("a", {"x": 1.0}), ("b", None)], queue="q")
    assert ledger.enqueue_many([("a", {"x": 1.0}), ("c", None)], "q", skip_existing=True) == 1
    with pytest.raises(DuplicateJob, match="'a'"):
        ledger.enqueue_many([("a", {"x": 2}), ("d", None)], "q", skip_existing=True)
    with pytest.raises(DuplicateJob, match="'b'"):
        ledger.enqueue_many([("b", None), ("d", None)], "other", skip_existing=True)
    assert sorted(s.job_id for s in ledger.jobs()) == ["a", "b", "c"]


def test_any_error_that_stops_enqueue_many_says_how_far_it_got(
    postgres_server_url: str,
) -> None:
    """A database error in batch 3 (a trigger refuses one row as a server would refuse a
    connection): the error keeps its type and says that batches 1 and 2 were committed."""
    with scratch_database(postgres_server_url) as url, Ledger(url, batch_size=100) as ledger:
        ledger.migrate()
        with ledger.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.job_id = 'job-0250' THEN RAISE EXCEPTION 'server busy' "
                    "USING ERRCODE = '53300'; END IF; RETURN NEW; END $$; "
                    "CREATE TRIGGER refuse BEFORE INSERT ON jobledger_jobs "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
        ids = [f"job-{i:04d}" for i in range(300)]
        with pytest.raises(DatabaseUnavailable) as caught:
            ledger.enqueue_many(ids)
        assert caught.value.committed == 200
        assert "200 jobs of earlier batches were enqueued" in str(caught.value)
        assert _event_count(ledger) == 200
        with ledger.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse ON jobledger_jobs"))
        assert ledger.enqueue_many(ids, skip_existing=True) == 100


def test_a_batch_refused_by_another_constraint_is_not_counted_as_written(
    database_url: str,
) -> None:
    """Before: the batch's IntegrityError was taken for duplicates, none were found, and
    enqueue_many returned 300 with only 200 jobs written."""
    with Ledger(database_url, batch_size=100) as ledger:
        with ledger.engine.begin() as conn:
            if ledger.engine.dialect.name == "sqlite":
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse BEFORE INSERT ON jobledger_jobs "
                        "WHEN NEW.job_id = 'job-0250' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                    )
                )
            else:
                conn.execute(
                    text(
                        "ALTER TABLE jobledger_jobs ADD CONSTRAINT refuse "
                        "CHECK (job_id <> 'job-0250')"
                    )
                )
        try:
            with pytest.raises(Exception, match="refuse"):
                ledger.enqueue_many([f"job-{i:04d}" for i in range(300)])
            assert _event_count(ledger) == 200
        finally:
            with ledger.engine.begin() as conn:
                if ledger.engine.dialect.name == "sqlite":
                    conn.execute(text("DROP TRIGGER refuse"))
                else:
                    conn.execute(text("ALTER TABLE jobledger_jobs DROP CONSTRAINT refuse"))


# -- verify-export on files that are not (quite) exports ---------------------------------


def _exported_line(ledger: Ledger) -> dict[str, Any]:
    ledger.enqueue("j")
    out = io.StringIO()
    ledger.export(out)
    record: dict[str, Any] = json.loads(out.getvalue())
    return record


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("version", "1"),
        ("version", 1.5),
        ("version", True),
        ("version", 0),
        ("position", None),
        ("position", "7"),
        ("job_id", 5),
        ("type", None),
        ("process", 3),
        ("hash", []),
        ("prev_hash", None),
        ("recorded_at", 0),
    ],
)
def test_a_line_with_a_value_of_the_wrong_type_is_one_problem(
    ledger: Ledger, key: str, value: object
) -> None:
    """Before: TypeError or AttributeError ended the check with a traceback."""
    good = _exported_line(ledger)
    bad = json.dumps({**good, key: value})
    report = verify_export([bad + "\n", json.dumps(good) + "\n"])
    assert report.problem_count == 1
    assert f"line 1: {key} must be" in str(report.problems[0])
    assert report.events == 1  # the good line was still checked


def test_a_binary_file_is_reported_line_by_line(ledger: Ledger) -> None:
    """Before: UnicodeDecodeError while reading the file."""
    good = json.dumps(_exported_line(ledger)).encode()
    lines = io.BytesIO(b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage\n" + good + b"\n")
    report = verify_export(lines)
    assert report.events == 1
    assert [str(p) for p in report.problems] == [
        "job '?': line 1 is not UTF-8 text (invalid start byte at byte 0)",
        "job '?': line 2 is not JSON (Expecting value: line 1 column 1 (char 0))",
        "job '?': line 3 is not UTF-8 text (invalid start byte at byte 0)",
    ]


def test_a_line_nested_too_deeply_to_read_is_one_problem(ledger: Ledger) -> None:
    good = _exported_line(ledger)
    unreadable = '{"data":' + "[" * 100_000 + "]" * 100_000 + "}"
    report = verify_export([unreadable, json.dumps(good)])
    assert (report.events, report.problem_count) == (1, 1)
    assert "line 1 is not JSON" in str(report.problems[0])
    deeper_than_any_ledger_stores = json.dumps({**good, "data": _nested(900)})
    report = verify_export([deeper_than_any_ledger_stores])
    assert (report.events, report.problem_count) == (1, 1)
    assert "stored hash does not match" in str(report.problems[0])
