"""StoredPayloads: the cache and the fast encoder never change what gets hashed."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from jobledger.audit.payloads import StoredPayloads
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
