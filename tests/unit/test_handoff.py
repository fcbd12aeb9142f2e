"""The row a job system's message carries: packed and unpacked exactly, anything else refused."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from jobledger import handoff
from jobledger.records import JobStatus

AT = datetime(2026, 11, 27, 22, 30, 1, 123456, tzinfo=timezone.utc)
ROW = JobStatus(
    job_id="j<1>",
    queue="mail",
    state="claimed",
    version=2,
    attempt=1,
    claimed_by="host:1:abc",
    claim_token=2,
    enqueued_at=AT,
    claimed_at=AT + timedelta(microseconds=1),
    heartbeat_at=None,
    finished_at=None,
    updated_at=AT + timedelta(microseconds=1),
    last_error=None,
    last_hash="f" * 64,
)


def test_a_row_comes_back_exactly_as_packed() -> None:
    assert handoff.unpack(handoff.pack(ROW)) == ROW
    east = AT.astimezone(timezone(timedelta(hours=5)))
    shifted = handoff.unpack(handoff.pack(dataclasses.replace(ROW, enqueued_at=east)))
    assert shifted.enqueued_at == AT
    assert shifted.enqueued_at.tzinfo == timezone.utc


def _packed_with(index: int, value: object) -> str:
    fields = json.loads(handoff.pack(ROW))
    fields[index] = value
    return json.dumps(fields)


@pytest.mark.parametrize(
    "text",
    [
        None,
        42,
        "",
        "not json",
        "{}",
        "[1]",
        "[2" + handoff.pack(ROW)[2:],  # another format
        _packed_with(1, 7),  # job_id not text
        _packed_with(4, "2"),  # version not a number
        _packed_with(4, True),  # a bool is not a version
        _packed_with(4, None),  # version is required
        _packed_with(8, "yesterday"),  # enqueued_at not a timestamp
        _packed_with(8, "2026-11-27T22:30:01"),  # no time zone
        _packed_with(14, None),  # last_hash is required
        json.dumps([1, *["x"] * 2000]),  # too long
    ],
)
def test_anything_but_a_packed_row_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"packed job row|wrong type|timestamp|time zone"):
        handoff.unpack(text)


def test_a_message_without_a_row_or_with_a_bad_one_claims_by_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert handoff.seen_in(None, "j<1>") is None
    assert handoff.seen_in(handoff.pack(ROW), "j<1>") == ROW
    with caplog.at_level(logging.WARNING, logger="jobledger.handoff"):
        assert handoff.seen_in("garbage", "j<1>") is None
        assert handoff.seen_in(handoff.pack(ROW), "other") is None
    assert [r.getMessage() for r in caplog.records] == [
        "job 'j<1>': ignoring the ledger row in its message: not a packed job row",
        "job 'other': ignoring the ledger row of job 'j<1>' in its message",
    ]
