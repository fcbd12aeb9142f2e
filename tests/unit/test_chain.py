"""The hand-written hash body equals the generic canonical encoding of the event object."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from jobledger.chain import GENESIS, broken_link, chain_hash, event_hash
from jobledger.encoding import canonical_json, canonical_time
from tests.unit.test_encoding import json_values

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
moments = st.datetimes(
    min_value=datetime(1000, 1, 1),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7, minutes=-30))]),
)


@given(
    texts,
    st.integers(min_value=1, max_value=2**31 - 1),
    texts,
    st.none() | texts,
    json_values,
    moments,
)
def test_event_hash_is_sha256_of_the_canonical_event_object(
    job_id: str, version: int, type: str, process: str | None, data: object, moment: datetime
) -> None:
    body = canonical_json(
        {
            "data": data,
            "job_id": job_id,
            "process": process,
            "recorded_at": canonical_time(moment),
            "type": type,
            "version": version,
        }
    )
    expected = hashlib.sha256(f"{GENESIS}\n{body}".encode()).hexdigest()
    assert event_hash(GENESIS, job_id, version, type, process, data, moment) == expected
    assert chain_hash(GENESIS, job_id, version, type, process, data, canonical_time(moment)) == (
        expected
    )


@given(moments)
def test_canonical_time_matches_strftime(moment: datetime) -> None:
    utc = moment.astimezone(timezone.utc)
    assert canonical_time(moment) == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_broken_link_is_named_the_same_way_wherever_it_is_found() -> None:
    """verify and verify_export both word a break with chain.broken_link."""
    other = "f" * 64
    assert broken_link(1, GENESIS, 2, GENESIS) == (
        "expected version 1: events are missing or out of order"
    )
    assert broken_link(1, GENESIS, 1, other) == "prev_hash is not GENESIS: the chain is broken"
    assert broken_link(4, other, 4, GENESIS) == (
        "prev_hash is not version 3's hash: the chain is broken"
    )
    assert broken_link(4, other, 5, other).startswith("expected version 4: ")
