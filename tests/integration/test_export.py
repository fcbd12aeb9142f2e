"""Exported JSON lines: complete, resumable, and checkable without the database."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from sqlalchemy import delete

from jobledger import Ledger
from jobledger.audit import verify_export
from jobledger.encoding import canonical_json
from jobledger.identity import new_identity
from jobledger.schema import events

A = new_identity()
GENESIS = "0" * 64


def _populate(ledger: Ledger) -> None:
    ledger.enqueue("invoice-1", queue="billing", data={"amount": 12.5, "note": 'naïve "quote"\n'})
    claim = ledger.claim("invoice-1", A)
    ledger.heartbeat(claim, progress={"pages": [1, 2.0, None, True]})
    ledger.complete(claim, result={"big": 10**20, "small": 1e-07, "ü": "€"})
    ledger.enqueue("invoice-2", queue="billing")
    ledger.fail(ledger.claim("invoice-2", A), "printer on fire")


def _export(ledger: Ledger, since: int | None = None) -> list[str]:
    out = io.StringIO()
    count = ledger.export(out, since=since)
    lines = out.getvalue().splitlines(keepends=True)
    assert count == len(lines)
    return lines


def test_every_event_is_exported_in_position_order(ledger: Ledger) -> None:
    _populate(ledger)
    records = [json.loads(line) for line in _export(ledger)]
    assert [(r["job_id"], r["version"]) for r in records] == [
        ("invoice-1", 1),
        ("invoice-1", 2),
        ("invoice-1", 3),
        ("invoice-1", 4),
        ("invoice-2", 1),
        ("invoice-2", 2),
        ("invoice-2", 3),
    ]
    history = ledger.history("invoice-1")
    assert [r["hash"] for r in records[:4]] == [e.hash for e in history]
    assert [r["position"] for r in records[:4]] == [e.position for e in history]
    assert records[3]["data"] == {"result": {"big": 10**20, "small": 1e-07, "ü": "€"}}
    assert records[0]["recorded_at"].endswith("Z")


def test_lines_are_canonical_json(ledger: Ledger) -> None:
    _populate(ledger)
    for line in _export(ledger):
        assert line == canonical_json(json.loads(line)) + "\n"


def test_an_export_verifies_on_its_own(ledger: Ledger) -> None:
    _populate(ledger)
    report = verify_export(_export(ledger))
    assert report.ok, report.problems
    assert (report.jobs, report.events) == (2, 7)


def test_since_exports_only_later_events_and_still_verifies(ledger: Ledger) -> None:
    _populate(ledger)
    everything = _export(ledger)
    cut = json.loads(everything[2])["position"]
    later = _export(ledger, since=cut)
    assert later == everything[3:]
    assert verify_export(later).ok


def _damaged(lines: list[str], index: int, **changes: Any) -> list[str]:
    record = json.loads(lines[index])
    record.update(changes)
    return [*lines[:index], json.dumps(record) + "\n", *lines[index + 1 :]]


def test_damage_to_an_exported_file_is_detected(ledger: Ledger) -> None:
    _populate(ledger)
    lines = _export(ledger)
    edited = _damaged(lines, 3, data={"result": {"big": 1}})
    assert {(p.job_id, p.version) for p in verify_export(edited).problems} == {("invoice-1", 4)}
    deleted = [*lines[:2], *lines[3:]]
    (problem,) = verify_export(deleted).problems
    assert (problem.job_id, problem.version) == ("invoice-1", 4)
    assert "missing or out of order" in problem.message
    swapped = [*lines[:1], lines[2], lines[1], *lines[3:]]
    assert not verify_export(swapped).ok
    garbage = [*lines, "not json\n"]
    assert "is not JSON" in str(verify_export(garbage).problems[0])


def test_verify_and_verify_export_name_a_missing_event_alike(ledger: Ledger) -> None:
    """One link rule (jobledger.chain.broken_link) words a break in the database and in a file."""
    _populate(ledger)
    lines = _export(ledger)
    (in_file,) = verify_export([lines[0], *lines[2:]]).problems  # invoice-1 version 2 gone
    with ledger.engine.begin() as conn:
        conn.execute(delete(events).where(events.c.job_id == "invoice-1", events.c.version == 2))
    (in_database,) = ledger.verify().problems
    assert in_file == in_database
    assert str(in_file) == (
        "job 'invoice-1' version 3: expected version 2: events are missing or out of order"
    )


def _independent_canonical(value: Any) -> str:
    """The README's "Hash chain" encoding, written from the text, not from jobledger's code."""
    if isinstance(value, dict):
        members = (
            json.dumps(key, ensure_ascii=False) + ":" + _independent_canonical(value[key])
            for key in sorted(value)
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_independent_canonical(item) for item in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def test_an_auditor_can_recompute_every_hash_with_hashlib(ledger: Ledger) -> None:
    _populate(ledger)
    previous: dict[str, str] = {}
    for line in _export(ledger):
        record = json.loads(line)
        body = _independent_canonical(
            {
                key: record[key]
                for key in ("data", "job_id", "process", "recorded_at", "type", "version")
            }
        )
        digest = hashlib.sha256(f"{record['prev_hash']}\n{body}".encode()).hexdigest()
        assert digest == record["hash"], line
        assert record["prev_hash"] == previous.get(record["job_id"], GENESIS)
        previous[record["job_id"]] = digest
