"""Numbers of every magnitude come back as stored and verify, on every backend (issue 16.3).

PostgreSQL's JSONB keeps a number as the decimal it was sent (Python's shortest
``repr``), not as the binary double: ``6.02214076e23`` comes back as the integer
602214076000000000000000, while the double is 602214075999999987023872. The
ledger hashes what the database will hand back, so verify never raises a false
alarm; the README's "Hash chain" section says how.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobledger import Ledger
from jobledger.audit import verify_export
from jobledger.chain import GENESIS, event_hash
from jobledger.errors import InvalidPayload, UnknownJob
from jobledger.identity import new_identity
from jobledger.schema import events, jobs
from tests.helpers import json_values
from tests.integration.test_export import _independent_canonical

PROCESS = new_identity()
_ids = itertools.count()

every_float = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.integers() | every_float | st.integers(min_value=-(2**80), max_value=2**80)
payloads = st.dictionaries(st.text(max_size=3), numbers | json_values, max_size=4) | st.lists(
    numbers, max_size=4
)


def stored_form(value: Any) -> Any:
    """``value`` as the README says it is stored: big floats as their decimal's integer."""
    if isinstance(value, float) and abs(value) >= 2**53:
        return int(Decimal(repr(value)))
    if isinstance(value, float) and value == 0:
        return 0.0  # JSONB has no negative zero
    if isinstance(value, dict):
        return {key: stored_form(item) for key, item in value.items()}
    if isinstance(value, list):
        return [stored_form(item) for item in value]
    return value


def same(got: Any, want: Any) -> bool:
    """Equal, and of the same JSON kind (an int where an int is expected)."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same(got[k], want[k]) for k in want)
        )
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same, got, want))
    if isinstance(want, float):
        return isinstance(got, float) and got == want and str(got) == str(want)
    return type(got) is type(want) and got == want


def check_round_trip(ledger: Ledger, payload: Any) -> None:
    n = next(_ids)
    single, bulk = f"numbers-{n}", f"numbers-bulk-{n}"
    try:
        ledger.enqueue(single, data=payload)
    except InvalidPayload:  # refused (a NUL or a lone surrogate): then nothing is written
        with pytest.raises(InvalidPayload):
            ledger.enqueue_many([(bulk, payload)])
        for job_id in (single, bulk):
            with pytest.raises(UnknownJob):
                ledger.history(job_id)
        return
    ledger.enqueue_many([(bulk, payload)])
    ledger.complete(ledger.claim(single, PROCESS), result=payload)
    want = stored_form(payload)
    enqueued, _, completed = ledger.history(single)
    assert same(enqueued.data["data"], want), (enqueued.data["data"], want)
    assert same(completed.data["result"], want), (completed.data["result"], want)
    (bulk_enqueued,) = ledger.history(bulk)
    assert same(bulk_enqueued.data["data"], want)
    report = ledger.verify()
    assert report.ok, report.problems
    out = io.StringIO()
    ledger.export(out)
    exported = io.StringIO(out.getvalue()).readlines()  # "\n" only: U+2028 is inside strings
    exported_report = verify_export(exported)
    assert exported_report.ok, exported_report.problems
    for line in exported:  # the README's stdlib re-check agrees too
        record = json.loads(line)
        fields = ("data", "job_id", "process", "recorded_at", "type", "version")
        body = _independent_canonical({key: record[key] for key in fields})
        digest = hashlib.sha256(f"{record['prev_hash']}\n{body}".encode()).hexdigest()
        assert digest == record["hash"], line
    last = json.loads(exported[-1])
    assert last["data"] in ({"data": want, "queue": "default"}, {"result": want})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads)
@example({"avogadro": 6.02214076e23})
@example([1e23, 2.0**60, -(2.0**60), 1e300, -1e300, 1.7976931348623157e308])
@example([5e-324, -0.0, 0.1, 1e-07, 2.0**53, 2.0**53 + 2, 9007199254740991.0, 4503599627370495.5])
def test_numbers_round_trip_and_verify(ledger: Ledger, payload: Any) -> None:
    check_round_trip(ledger, payload)


def test_big_floats_stored_by_earlier_versions_still_verify(
    tmp_path: Path, sqlite_template: Path
) -> None:
    # Before big floats were stored as integers, SQLite kept {"x": 1e+23} as written and
    # hashed it by the float's exact value. Such an event must keep verifying.
    path = tmp_path / "old.db"
    shutil.copy(sqlite_template, path)
    with Ledger(f"sqlite:///{path}") as ledger:
        ledger.enqueue("old-1", data={"x": 1})
        (event,) = ledger.history("old-1")
        old_data = {"data": {"x": 1e23}, "queue": "default"}
        old_hash = event_hash(GENESIS, "old-1", 1, "enqueued", None, old_data, event.recorded_at)
        with ledger.engine.begin() as conn:
            # Written as json.dumps writes it, bypassing the ledger: {"x": 1e+23}.
            conn.execute(events.update().values(data=old_data, hash=old_hash))
            conn.execute(jobs.update().values(last_hash=old_hash))
        (event,) = ledger.history("old-1")
        assert event.data == old_data
        assert isinstance(event.data["data"]["x"], float)
        assert ledger.verify().ok
        out = io.StringIO()
        ledger.export(out)
        assert verify_export(io.StringIO(out.getvalue()).readlines()).ok
