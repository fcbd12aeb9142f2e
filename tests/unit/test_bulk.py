"""The bulk adapters' text handling: moments, and PostgreSQL's COPY text format."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobledger.audit.bulk import (
    PADDING,
    PROJECTION_TAIL,
    Bulk,
    EventRow,
    ProjectedRow,
    parse_moment,
)
from jobledger.audit.postgres import PostgresBulk, _copy_line, _copy_rows
from jobledger.audit.sqlite import SqliteBulk
from jobledger.encoding import canonical_time
from jobledger.schema import EVENT_FIELDS, STATUS_FIELDS

instants = st.datetimes(
    min_value=datetime(1000, 1, 1),
    max_value=datetime(9999, 12, 31),
    timezones=st.just(timezone.utc),
)


def postgres_text(moment: datetime) -> str:
    """PostgreSQL's ISO output of a timestamptz in a UTC session: no trailing zeros."""
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "+00"


def sqlite_text(moment: datetime) -> str:
    """How UtcDateTime stores a moment in SQLite."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


@given(instants)
def test_postgres_moments_hash_as_canonical_time(moment: datetime) -> None:
    bulk = PostgresBulk.__new__(PostgresBulk)
    assert bulk.canonical_time(postgres_text(moment)) == canonical_time(moment)
    assert parse_moment(postgres_text(moment)) == moment


@given(instants)
def test_sqlite_moments_hash_as_canonical_time(moment: datetime) -> None:
    bulk = SqliteBulk.__new__(SqliteBulk)
    assert bulk.canonical_time(sqlite_text(moment)) == canonical_time(moment)
    assert parse_moment(sqlite_text(moment)) == moment


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=timezone.utc)),
        ("2026-01-01 02:30:00.5+02:30", datetime(2026, 1, 1, 0, 0, 0, 500000, timezone.utc)),
        ("2026-01-01 00:00:00-01", datetime(2026, 1, 1, 1, tzinfo=timezone.utc)),
        ("2026-01-01 00:00:00.000001", datetime(2026, 1, 1, 0, 0, 0, 1, timezone.utc)),
    ],
)
def test_moments_in_other_forms(text: str, instant: datetime) -> None:
    assert parse_moment(text) == instant
    assert Bulk().canonical_time(text) == canonical_time(instant)


@pytest.mark.parametrize(
    "text", ["infinity", "10000-01-01 00:00:00+00", "0044-03-15 12:00:00+00 BC"]
)
def test_a_moment_that_is_no_instant_hashes_as_itself(text: str) -> None:
    """PostgreSQL can store these; no canonical time stands for them, so they fail the hash."""
    assert parse_moment(text) is None
    assert PostgresBulk.__new__(PostgresBulk).canonical_time(text) == text
    assert parse_moment("2026-02-30 00:00:00") is None


def chunks(lines: list[str]) -> list[memoryview]:
    """What libpq hands out for a COPY TO: one row of COPY text per chunk."""
    return [memoryview(line.encode()) for line in lines]


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(st.lists(st.none() | texts, min_size=3, max_size=8), st.integers(1, 2**31 - 1))
def test_copy_text_round_trips(values: list[Any], version: int) -> None:
    """What rebuild writes as COPY text reads back as the same values."""
    row = [values[0] or "job", version, *values[1:]]
    (parsed,) = _copy_rows(iter(chunks([_copy_line(row)])), "utf-8")
    assert parsed == [row[0], version, *values[1:]]


def test_postgres_output_escapes_are_undone() -> None:
    # COPY's text output escapes backslash and \b \f \n \r \t \v; \N is NULL.
    data = r'{"a": "x\\\\y\\"z"}\v\b\f\r\n\q'
    line = "\t".join([r"j\tb", "3", "heartbeat", r"\N", data]) + "\n"
    (parsed,) = _copy_rows(iter(chunks([line])), "utf-8")
    assert parsed == ["j\tb", 3, "heartbeat", None, '{"a": "x\\\\y\\"z"}\v\b\f\r\nq']
    (parsed,) = _copy_rows(iter(chunks(["j\t1\tenqueued\t\\N\t{}\n"])), "utf-8")
    assert parsed == ["j", 1, "enqueued", None, "{}"]
    (parsed,) = _copy_rows(iter(chunks(["j\t1\t\\N\tq\t\\N\t\\N\n"])), "utf-8")
    assert parsed == ["j", 1, None, "q", None, None]


def test_moments_one_second_apart_differ() -> None:
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    later = moment + timedelta(microseconds=1)
    bulk = PostgresBulk.__new__(PostgresBulk)
    assert bulk.canonical_time(postgres_text(moment)) != bulk.canonical_time(postgres_text(later))


@pytest.mark.parametrize(
    "values", [["\\N", None, "x"], ["a\tb", None, None], ["c:\\dir", "\n", "\r"], ["", None, ""]]
)
def test_copy_lines_escape_what_needs_it(values: list[Any]) -> None:
    (parsed,) = _copy_rows(iter(chunks([_copy_line(["job", 1, *values])])), "utf-8")
    assert parsed == ["job", 1, *values]


def test_the_stream_shapes_are_the_tables_columns() -> None:
    """EventRow and ProjectedRow name the stream's columns; the SQL selects them in that order."""
    assert EventRow._fields == EVENT_FIELDS
    assert ProjectedRow._fields[:3] == ("job_id", "version", "type")
    assert tuple(f for f in STATUS_FIELDS if f not in ("job_id", "version")) == PROJECTION_TAIL
    assert len(EventRow._fields) + PADDING == len(ProjectedRow._fields)
