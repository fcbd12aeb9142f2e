"""The ledger-wide anchor: sealing, and verify catching what per-job chains cannot.

Each attack is made as an attacker with write access would make it: plain SQL
behind the ledger's back, then ``rebuild`` so that the projection agrees with
the remaining events and every per-job check passes. Only the anchor can tell.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from jobledger import Ledger, audit
from jobledger.aio import AsyncLedger
from jobledger.anchor import NAME, Head
from jobledger.audit import VerifyReport
from jobledger.catchup import CatchUp
from jobledger.chain import event_hash
from jobledger.errors import InvalidHead
from jobledger.identity import new_identity
from jobledger.schema import anchor, checkpoints, events, jobs
from jobledger.sealer import Anchor, Sealer
from tests.helpers import append_in, seal_all

A = new_identity()


def _populate(ledger: Ledger) -> None:
    ledger.enqueue("done", queue="mail", data={"to": "a@b.c"})
    claim = ledger.claim("done", A)
    ledger.heartbeat(claim, progress={"sent": 1})
    ledger.complete(claim, result={"ok": True})
    ledger.enqueue("waiting")
    ledger.enqueue("victim", data={"amount": 10})
    ledger.cancel("victim")
    ledger.enqueue("last")


def _sql(ledger: Ledger, *statements: Any) -> None:
    with ledger.engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)


def _anchor_problems(report: VerifyReport) -> list[str]:
    return [str(p) for p in report.problems]


@pytest.fixture
def sealed(ledger: Ledger) -> Ledger:
    _populate(ledger)
    seal_all(ledger)
    return ledger


def test_a_sealed_ledger_verifies_and_names_its_head(sealed: Ledger) -> None:
    report = sealed.verify()
    assert report.ok, report.problems
    assert (report.sealed, report.unsealed, report.events) == (8, 0, 8)
    assert report.head is not None
    assert report.head.seq == 8
    assert sealed.verify(head=report.head).ok
    assert sealed.verify(head=str(report.head)).ok


def test_an_unsealed_tail_is_counted_not_a_problem(sealed: Ledger) -> None:
    sealed.enqueue("new-1")
    sealed.enqueue("new-2")
    report = sealed.verify()
    assert report.ok, report.problems
    assert (report.sealed, report.unsealed) == (8, 2)
    seal_all(sealed)
    assert sealed.verify().unsealed == 0


def test_a_ledger_never_sealed_is_all_tail(ledger: Ledger) -> None:
    _populate(ledger)
    report = ledger.verify()
    assert report.ok
    assert (report.sealed, report.unsealed, report.head) == (0, 8, None)


def _delete_job(ledger: Ledger) -> None:
    _sql(ledger, delete(events).where(events.c.job_id == "victim"))
    _sql(ledger, delete(jobs).where(jobs.c.job_id == "victim"))


def _drop_last_event(ledger: Ledger) -> None:
    _sql(ledger, delete(events).where((events.c.job_id == "victim") & (events.c.version == 2)))
    ledger.rebuild()  # the projection agrees: "victim" is enqueued again


def _renumber(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        position = conn.execute(
            select(events.c.position).where(events.c.job_id == "victim", events.c.version == 1)
        ).scalar_one()
    _sql(
        ledger, update(events).where(events.c.position == position).values(position=position + 1000)
    )


def _truncate(ledger: Ledger) -> None:
    _sql(ledger, delete(events), delete(jobs))


def _rewrite_payload(ledger: Ledger) -> None:
    """Change the victim's first event's data and re-hash its chain: per job, all is well."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(events).where(events.c.job_id == "victim").order_by(events.c.version)
        ).all()
    previous = rows[0].prev_hash
    for row in rows:
        data = {**row.data, "data": {"amount": 10_000}} if row.version == 1 else row.data
        new_hash = event_hash(
            previous, row.job_id, row.version, row.type, row.process, data, row.recorded_at
        )
        _sql(
            ledger,
            update(events)
            .where(events.c.position == row.position)
            .values(data=data, prev_hash=previous, hash=new_hash),
        )
        previous = new_hash
    ledger.rebuild()


def _edit_hash(ledger: Ledger) -> None:
    _sql(
        ledger,
        update(events)
        .where((events.c.job_id == "done") & (events.c.version == 2))
        .values(hash="f" * 64),
    )


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        (_delete_job, "is gone"),
        (_drop_last_event, "is gone"),
        (_renumber, "is gone"),
        (_truncate, "is gone"),
        (_rewrite_payload, "does not match the event it seals"),
        (_edit_hash, "does not match the event it seals"),
    ],
)
def test_verify_detects_an_attack_through_the_anchor(
    sealed: Ledger, attack: Any, expected: str
) -> None:
    attack(sealed)
    report = sealed.verify()
    assert not report.ok
    assert any(expected in message for message in _anchor_problems(report)), report.problems


def test_per_job_checks_alone_miss_a_deleted_job(sealed: Ledger) -> None:
    """What the anchor adds: with it gone, deleting a whole job passes verify."""
    _delete_job(sealed)
    report = sealed.verify()
    gone = [(p.job_id, p.version) for p in report.problems]
    assert gone == [("victim", 1), ("victim", 2)]  # the anchor's problems, nothing else
    assert all("is gone" in str(p) for p in report.problems)


def test_a_renumbered_event_is_also_reported_unsealed(sealed: Ledger) -> None:
    _renumber(sealed)
    messages = _anchor_problems(sealed.verify())
    assert any("not in the anchor, though the sealer has passed it" in m for m in messages) or (
        sealed.engine.dialect.name == "sqlite"  # moved past the checkpoint: the tail
    )


def test_links_cut_off_the_anchors_end_are_detected(sealed: Ledger) -> None:
    _sql(sealed, delete(anchor).where(anchor.c.seq > 6))
    messages = _anchor_problems(sealed.verify())
    assert any("links were removed from the anchor's end" in m for m in messages)
    assert any("not in the anchor, though the sealer has passed it" in m for m in messages)


def test_an_edited_link_is_detected(sealed: Ledger) -> None:
    _sql(sealed, update(anchor).where(anchor.c.seq == 3).values(digest="0" * 64))
    messages = _anchor_problems(sealed.verify())
    assert any("anchor link 3 does not match" in m for m in messages)


def test_a_missing_link_in_the_middle_is_detected(sealed: Ledger) -> None:
    _sql(sealed, delete(anchor).where(anchor.c.seq == 4))
    messages = _anchor_problems(sealed.verify())
    assert any("anchor links 4 are missing" in m for m in messages)


def _reseal_from_scratch(ledger: Ledger) -> None:
    """What an attacker with write access does to hide a rewrite: seal it all again."""
    CatchUp(ledger, Anchor()).reset()
    seal_all(ledger)


def test_a_published_head_catches_a_rewrite_resealed_from_scratch(sealed: Ledger) -> None:
    head = sealed.verify().head
    assert head is not None
    sealed.enqueue("after")
    seal_all(sealed)
    assert sealed.verify(head=head).ok  # history grew past the head: fine
    _delete_job(sealed)
    sealed.enqueue("cover-1")  # as many events as were deleted, so link 8 exists again
    sealed.enqueue("cover-2")
    _reseal_from_scratch(sealed)
    assert sealed.verify().ok  # without the head, a full rewrite is consistent
    report = sealed.verify(head=head)
    assert [str(p) for p in report.problems] == [
        f"job '?': anchor link {head.seq} is not the published head: history up to it was rewritten"
    ]


def test_the_async_ledger_publishes_and_checks_the_same_head(sealed: Ledger) -> None:
    url = sealed.engine.url.render_as_string(hide_password=False)

    async def check() -> tuple[Head | None, VerifyReport, VerifyReport]:
        async with AsyncLedger(url) as ledger:
            head = await ledger.head()
            assert head is not None
            return (
                head,
                await ledger.verify(head=str(head)),
                await ledger.verify(head=Head(99, "a" * 64)),
            )

    head, good, beyond = asyncio.run(check())
    assert head == sealed.head()
    assert good.ok, good.problems
    assert not beyond.ok


def test_a_head_beyond_the_anchor_is_reported(sealed: Ledger) -> None:
    report = sealed.verify(head=Head(99, "a" * 64))
    assert [str(p) for p in report.problems] == [
        "job '?': the published head's link 99 is gone (the anchor ends at link 8)"
    ]


@pytest.mark.parametrize("text_", ["", "8", "8:xyz", "0:" + "a" * 64, "8:" + "A" * 64])
def test_a_malformed_head_is_refused(sealed: Ledger, text_: str) -> None:
    with pytest.raises(InvalidHead, match="SEQ:DIGEST"):
        sealed.verify(head=text_)


def test_two_sealers_at_once_seal_each_event_once(ledger: Ledger) -> None:
    """Both queue on the checkpoint row: never a link twice, never a gap."""
    url = ledger.engine.url.render_as_string(hide_password=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def seal() -> None:
        with Ledger(url) as own:
            sealer = Sealer(own, batch_size=7)
            try:
                while not stop.is_set():
                    sealer.run_once()
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=seal) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for n in range(150):
            ledger.enqueue(f"job-{n}")
    finally:
        time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    seal_all(ledger)
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.sealed == report.events == 150


def test_commit_order_not_position_order_is_sealed(ledger: Ledger) -> None:
    """On PostgreSQL seal order is the writers' order, not positions': both verify."""
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("SQLite commits in position order")
    with ledger.engine.connect() as slow:
        transaction = slow.begin()
        slow.execute(select(func.pg_current_xact_id()))  # the older writer ...
        ledger.enqueue("early")  # ... a younger one takes the lower position
        append_in(slow, "late")
        transaction.commit()
    seal_all(ledger)
    with ledger.engine.connect() as conn:
        sealed = conn.execute(select(anchor.c.job_id).order_by(anchor.c.seq)).scalars().all()
        by_position = conn.execute(select(events.c.job_id).order_by(events.c.position)).scalars()
        assert (sealed, by_position.all()) == (["late", "early"], ["early", "late"])
    assert ledger.verify().ok
    # Each line's previous link is not the line before's: it is looked up.
    records = _exported(ledger)
    assert [(r["job_id"], r["anchor"]["seq"]) for r in records] == [("early", 2), ("late", 1)]
    assert records[0]["anchor"]["prev"] == records[1]["anchor"]["digest"]
    report = audit.verify_export(_lines(records), head=ledger.head())
    assert report.ok, report.problems


def test_the_checkpoint_follows_the_last_link(sealed: Ledger) -> None:
    with sealed.engine.connect() as conn:
        checkpoint = conn.execute(
            select(checkpoints.c.position).where(checkpoints.c.name == NAME)
        ).scalar_one()
        last = conn.execute(select(anchor.c.position).where(anchor.c.seq == 8)).scalar_one()
    assert checkpoint == last


# --- exports ---------------------------------------------------------------------------------


def _exported(ledger: Ledger) -> list[dict[str, Any]]:
    out = io.StringIO()
    ledger.export(out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _lines(records: list[dict[str, Any]]) -> list[str]:
    return [
        json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for r in records
    ]


def test_a_full_export_carries_the_anchor_and_checks_the_head(sealed: Ledger) -> None:
    sealed.enqueue("unsealed")
    head = sealed.head()
    assert head is not None
    records = _exported(sealed)
    assert [r["anchor"]["seq"] for r in records if "anchor" in r] == list(range(1, 9))
    assert "anchor" not in records[-1]
    report = audit.verify_export(_lines(records), head=head)
    assert report.ok, report.problems
    assert (report.sealed, report.unsealed, report.head) == (8, 1, head)
    bad = audit.verify_export(_lines(records), head=Head(head.seq, "b" * 64))
    assert [p.message for p in bad.problems] == [
        "anchor link 8 is not the published head: history up to it was rewritten"
    ]


def test_a_link_can_be_checked_with_the_standard_library_alone(sealed: Ledger) -> None:
    record = _exported(sealed)[2]
    link = {k: record[k] for k in ("hash", "job_id", "position", "version")}
    link["seq"] = record["anchor"]["seq"]
    text_ = (
        record["anchor"]["prev"]
        + "\n"
        + json.dumps(link, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    )
    assert hashlib.sha256(text_.encode()).hexdigest() == record["anchor"]["digest"]


def test_an_export_with_a_job_removed_fails_verify_export(sealed: Ledger) -> None:
    records = [r for r in _exported(sealed) if r["job_id"] != "victim"]
    messages = [p.message for p in audit.verify_export(_lines(records)).problems]
    assert messages
    assert all("is missing" in m for m in messages)


def test_an_export_with_its_end_cut_off_needs_the_head(sealed: Ledger) -> None:
    head = sealed.head()
    records = _exported(sealed)[:-1]
    assert audit.verify_export(_lines(records)).ok  # without a head, a shorter ledger is fine
    report = audit.verify_export(_lines(records), head=head)
    assert [p.message for p in report.problems] == [
        "the published head's link 8 is gone (the export ends at link 7)"
    ]


def test_an_edited_or_duplicated_link_fails_verify_export(sealed: Ledger) -> None:
    records = _exported(sealed)
    edited = [dict(r) for r in records]
    edited[3] = {**edited[3], "anchor": {**edited[3]["anchor"], "digest": "c" * 64}}
    messages = [p.message for p in audit.verify_export(_lines(edited)).problems]
    assert "anchor link 4 does not match the event it seals" in messages
    assert "anchor link 5 does not follow link 4" in messages
    malformed = [*records[:-1], {**records[-1], "anchor": {"seq": 0}}]
    messages = [p.message for p in audit.verify_export(_lines(malformed)).problems]
    assert any("anchor must be an object" in m for m in messages)


def test_old_exports_and_since_exports_verify_without_links(sealed: Ledger) -> None:
    old = [{k: v for k, v in r.items() if k != "anchor"} for r in _exported(sealed)]
    report = audit.verify_export(_lines(old))
    assert report.ok
    assert (report.sealed, report.unsealed) == (0, 8)
    out = io.StringIO()
    sealed.export(out, since=2)
    assert '"anchor"' not in out.getvalue()
    assert audit.verify_export(out.getvalue().splitlines()).ok


def test_hostile_job_ids_seal_and_verify(ledger: Ledger) -> None:
    for job_id in ("back\\slash", "\\N", "ünï", "日本", 'quoted"', "sp ace"):
        ledger.enqueue(job_id)
    seal_all(ledger)
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.sealed == 6
    records = _exported(ledger)
    assert audit.verify_export(_lines(records), head=ledger.head()).ok


def test_a_deleted_checkpoint_with_links_left_is_detected(sealed: Ledger) -> None:
    _sql(sealed, delete(checkpoints).where(checkpoints.c.name == NAME))
    messages = _anchor_problems(sealed.verify())
    assert messages == ["job '?': the anchor has links but the sealer's checkpoint is gone"]
