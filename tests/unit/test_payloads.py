"""StoredPayloads: the cache and the fast encoder never change what gets hashed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobledger.audit.payloads import FAST_JSON, StoredPayloads
from jobledger.encoding import canonical_json, canonical_string
from tests.helpers import json_values

#: The ways a payload comes back as text: SQLAlchemy's JSON (json.dumps), PostgreSQL's
#: JSONB output (spaces after separators), compact, and padded with whitespace.
writers = st.sampled_from(
    [
        json.dumps,
        lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True),
        lambda v: json.dumps(v, separators=(",", ":")),
        lambda v: f" \n{json.dumps(v, indent=2)}\t",
    ]
)


@given(json_values, writers)
def test_encoded_is_canonical_json_of_the_decoded_text(value: object, write: object) -> None:
    text = write(value)  # type: ignore[operator]
    payloads = StoredPayloads()
    encoded, decoded = payloads.encoded(text)
    assert encoded == canonical_json(json.loads(text)) == canonical_json(value)
    assert decoded == json.loads(text)
    assert payloads.encoded(text) == (encoded, decoded)  # served from the cache
    assert payloads.value(text) == decoded


@given(st.lists(json_values, min_size=1, max_size=30))
def test_a_small_cache_answers_as_a_fresh_one_does(values: list[object]) -> None:
    small = StoredPayloads(size=3, longest=40)
    texts = [json.dumps(v) for v in values] * 2
    assert [small.encoded(t) for t in texts] == [StoredPayloads().encoded(t) for t in texts]
    assert len(small._encoded) <= 3
    assert all(len(text) <= 40 for text in small._encoded)


def test_floats_take_the_reference_encoder() -> None:
    payloads = StoredPayloads()
    assert payloads.encoded('{"a": 2.0, "b": [1e20, 0.5]}')[0] == (
        '{"a":2,"b":[100000000000000000000,0.5]}'
    )
    assert payloads.encoded('{"a": 2}')[0] == '{"a":2}'  # no float left over from before
    assert payloads.encoded("[NaN]")[0] == canonical_json([float("nan")])


def test_text_that_is_not_json_is_encoded_as_a_string() -> None:
    payloads = StoredPayloads()
    for text in ("{oops", '{"a": 1} trailing', ""):
        assert payloads.encoded(text) == (canonical_string(text), text)
    # A SQLite BLOB is not text at all; it must fail its hash, not stop verify.
    encoded, _ = payloads.encoded(b'{"a": 1}')  # type: ignore[arg-type]
    assert encoded == canonical_string(repr(b'{"a": 1}'))


# -- msgspec (the `speedups` extra) and the standard library give the same answers ----------

needs_msgspec = pytest.mark.skipif(not FAST_JSON, reason="msgspec is not installed")


def _answers(text: object, fast: bool) -> tuple[str, str, str]:
    """What a fresh StoredPayloads gives for ``text``; ``repr`` tells 1 from 1.0 and True."""
    payloads = StoredPayloads(fast=fast)
    encoded, decoded = payloads.encoded(text)  # type: ignore[arg-type]
    return encoded, repr(decoded), repr(StoredPayloads(fast=fast).value(text))  # type: ignore[arg-type]


@needs_msgspec
@given(json_values, writers)
def test_msgspec_gives_what_json_gives(value: object, write: object) -> None:
    text = write(value)  # type: ignore[operator]
    assert _answers(text, fast=True) == _answers(text, fast=False)
    assert _answers(text, fast=True)[0] == canonical_json(value)


#: Texts where a fast decoder could read or write differently, and the cases around them.
EDGE_TEXTS = [
    "[18446744073709551616]",  # past 64 bits (orjson, for one, reads a float)
    "[" + "9" * 4300 + "]",  # Python's longest integer text
    "[" + "9" * 4301 + "]",  # one digit more: not JSON to Python
    "[18446744073709551615, -9223372036854775808, 1000000000000000000]",
    '{"n": -9223372036854775809}',
    "[2.0, 1e20, -0.0, 0.5, 1E-7, 123456789012345678901234567890.5]",
    "[1e400]",  # infinity
    "[NaN, Infinity]",
    '["\\ud800"]',  # a lone surrogate
    '["\\ud83d\\ude00", "\\u0000\\u0001\\u001f\\u007f\\u2028\\u2029", "\\b\\f\\n\\r\\t\\"\\\\/"]',
    '{"\\ud83d\\ude00": 1, "\\uffff": 2, "\\ue000": 3, "a": 4, "": 5, "A": 6, "é": 7}',
    '{"a": 1, "a": 2}',  # JSONB keeps the last; so do both decoders
    '["3.14 and 1234567890123456789 in text"]',  # looks like a float, but is a string
    "[true, false, null, [], {}]",
    "[" * 300 + "]" * 300,
    "[" * 3000 + "]" * 3000,  # deeper than either reads: RecursionError both ways
    '  {"a": [1, 2]}\n',
    '{"a": 1} trailing',
    "",
    '"just a string"',
    "42",
]


@needs_msgspec
@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_msgspec_gives_what_json_gives_on_edge_cases(text: str) -> None:
    def outcome(fast: bool) -> object:
        try:
            return _answers(text, fast)
        except RecursionError:  # as json has always raised on such text
            return RecursionError

    assert outcome(fast=True) == outcome(fast=False)


def test_bytes_still_fail_their_hash() -> None:
    for fast in (True, False):  # msgspec would read bytes; the stored text must be str
        encoded, _ = StoredPayloads(fast=fast).encoded(b'{"a": 1}')  # type: ignore[arg-type]
        assert encoded == canonical_string(repr(b'{"a": 1}'))
        assert StoredPayloads(fast=fast).value(b"[1]") == repr(b"[1]")  # type: ignore[arg-type]
