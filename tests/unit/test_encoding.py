from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobledger.chain import GENESIS, event_hash
from jobledger.encoding import canonical_json, canonical_time, normalize_payload
from jobledger.errors import InvalidPayload
from tests.helpers import json_values


@given(json_values)
def test_canonical_json_is_valid_json_of_the_same_value(value: object) -> None:
    decoded = json.loads(canonical_json(value))
    assert canonical_json(decoded) == canonical_json(value)


@given(json_values)
def test_canonical_json_survives_a_round_trip_through_json(value: object) -> None:
    # What the database hands back is json.loads of what was stored.
    assert canonical_json(json.loads(json.dumps(value))) == canonical_json(value)


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": [1, 2.5], "a": None, "é": "ü"}) == '{"a":null,"b":[1,2.5],"é":"ü"}'


@pytest.mark.parametrize(
    ("stored", "read_back"),
    [(2.0, 2), (1e20, 100000000000000000000), (-0.0, 0), (1e-07, 1e-07)],
)
def test_numbers_encode_alike_however_the_database_returns_them(
    stored: float, read_back: float
) -> None:
    # PostgreSQL's JSONB turns 1e20 into the integer 100000000000000000000 and -0.0 into 0.
    assert canonical_json(stored) == canonical_json(read_back)


@pytest.mark.parametrize(
    "bad",
    [
        float("nan"),
        float("inf"),
        {1: "integer key"},
        {"nul": "a\x00b"},
        "lone \ud800 surrogate",
        {"when": datetime.now(timezone.utc)},
        {1, 2},
        b"bytes",
    ],
)
def test_unstorable_payloads_are_refused(bad: object) -> None:
    with pytest.raises(InvalidPayload):
        normalize_payload({"x": bad})


def test_tuples_become_lists() -> None:
    assert normalize_payload({"a": (1, (2, 3))}) == {"a": [1, [2, 3]]}


def test_canonical_time_is_utc_with_microseconds() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=timezone(timedelta(hours=2)))
    assert canonical_time(moment) == "2026-01-02T01:04:05.000060Z"
    with pytest.raises(ValueError, match="timezone"):
        canonical_time(datetime(2026, 1, 1))


def test_event_hash_matches_the_documented_recipe() -> None:
    moment = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    body = (
        '{"data":{"queue":"default","data":null},"job_id":"job-1","process":null,'
        '"recorded_at":"2026-11-26T12:00:00.000000Z","type":"enqueued","version":1}'
    )
    # Same value, keys sorted: the documented encoding sorts data's keys too.
    body = body.replace('{"queue":"default","data":null}', '{"data":null,"queue":"default"}')
    expected = hashlib.sha256(f"{GENESIS}\n{body}".encode()).hexdigest()
    got = event_hash(
        GENESIS, "job-1", 1, "enqueued", None, {"queue": "default", "data": None}, moment
    )
    assert got == expected


def test_every_field_changes_the_hash() -> None:
    moment = datetime(2026, 11, 26, tzinfo=timezone.utc)
    base = (GENESIS, "j", 1, "enqueued", None, {"a": 1}, moment)
    variants = [
        ("1" * 64, *base[1:]),
        (base[0], "k", *base[2:]),
        (*base[:2], 2, *base[3:]),
        (*base[:3], "claimed", *base[4:]),
        (*base[:4], "host:1:abcdef12", *base[5:]),
        (*base[:5], {"a": 2}, base[6]),
        (*base[:6], moment + timedelta(microseconds=1)),
    ]
    hashes = {event_hash(*v) for v in [base, *variants]}  # type: ignore[arg-type]
    assert len(hashes) == len(variants) + 1


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (6.02214076e23, 602214076000000000000000),  # not int(6.02214076e23) = ...987023872
        (1e23, 10**23),
        (2.0**60, 1152921504606847000),
        (-(2.0**60), -1152921504606847000),
        (2.0**53, 2**53),
        (1e300, 10**300),
        (-0.0, 0.0),
        (9007199254740991.0, 9007199254740991.0),  # below 2**53: stays a float
        (5e-324, 5e-324),
        (0.1, 0.1),
    ],
)
def test_floats_are_stored_as_jsonb_gives_them_back(given: float, stored: float) -> None:
    got = normalize_payload({"n": given})["n"]
    assert type(got) is type(stored)
    assert got == stored
    assert str(got) == str(stored)
    assert float(got) == given


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_stored_float_is_its_shortest_decimal(value: float) -> None:
    stored = normalize_payload(value)
    assert float(stored) == value
    assert Decimal(json.dumps(stored)) == Decimal(repr(value))  # the decimal JSONB keeps
    # What the database hands back (json.loads of the stored text) hashes alike.
    assert canonical_json(json.loads(json.dumps(stored))) == canonical_json(stored)


def test_floats_stored_by_earlier_versions_keep_their_encoding() -> None:
    # SQLite rows written before big floats were stored as integers hold "1e+23":
    # their hashes were made with the float's exact value, and must still match.
    assert canonical_json(json.loads('{"x": 1e+23}')) == '{"x":99999999999999991611392}'
