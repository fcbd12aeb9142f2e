"""Archival: finished jobs move to a file and out of the database, and verify stays exact.

Each attack is made as in test_anchor.py: plain SQL behind the ledger's back,
then ``rebuild``, so that only the anchor and the archive records can tell.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update

from jobledger import Ledger, audit
from jobledger.anchor import Head
from jobledger.archive import ArchiveResult, archive, list_archives
from jobledger.catchup import CatchUp
from jobledger.errors import ArchiveError, StaleClaim
from jobledger.identity import new_identity
from jobledger.schema import anchor, anchor_bridges, archives, events, jobs
from jobledger.sealer import Sealer
from jobledger.stats import QueueStat, QueueStats
from tests.helpers import count_rows, seal_all

A = new_identity()


def _stats(ledger: Ledger) -> CatchUp:
    runner = CatchUp(ledger, QueueStats())
    deadline = time.monotonic() + 30
    while True:
        runner.run_once()
        if runner.checkpoint().position >= _last_position(ledger):
            return runner
        assert time.monotonic() < deadline, "queue stats did not catch up"
        time.sleep(0.02)


def _last_position(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.max(events.c.position))).scalar() or 0)


def _finish(ledger: Ledger, job_id: str, how: str = "complete", queue: str = "default") -> None:
    ledger.enqueue(job_id, queue=queue, data={"n": job_id})
    if how == "cancel":
        ledger.cancel(job_id)
        return
    claim = ledger.claim(job_id, A)
    ledger.heartbeat(claim, progress={"half": True})
    if how == "retry":  # fails once, then completes: two runs
        ledger.fail(claim, error="boom")
        ledger.requeue(job_id)
        claim = ledger.claim(job_id, A)
    ledger.complete(claim, result={"ok": job_id})


def _populate(ledger: Ledger, prefix: str = "") -> None:
    """Finished jobs interleaved with ones that stay (so the anchor gets gaps)."""
    for n in range(12):
        _finish(ledger, f"{prefix}done-{n:02d}", ("complete", "cancel", "retry")[n % 3], "mail")
        if n % 4 == 0:
            ledger.enqueue(f"{prefix}open-{n:02d}")
        if n % 5 == 0:
            _finish(ledger, f"{prefix}failed-{n:02d}", "complete")
            # fail, not complete: a failed job is not final
            ledger.enqueue(f"{prefix}retrying-{n:02d}")
            ledger.fail(ledger.claim(f"{prefix}retrying-{n:02d}", A), error="again")
    ledger.enqueue(f"{prefix}last")


def _now(ledger: Ledger) -> datetime:
    time.sleep(0.01)  # the cutoff is strictly after every event so far
    moment = datetime.now(timezone.utc)
    time.sleep(0.01)
    return moment


@pytest.fixture
def busy(ledger: Ledger) -> Ledger:
    _populate(ledger)
    seal_all(ledger)
    _stats(ledger)
    return ledger


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        header, *lines = [json.loads(line) for line in file]
    return header, lines


def _archive(ledger: Ledger, path: Path, **options: Any) -> ArchiveResult:
    return archive(ledger, _now(ledger), path, **options)


def test_archival_moves_finished_jobs_out_and_verify_stays_ok(busy: Ledger, tmp_path: Path) -> None:
    before = {e.job_id: busy.history(e.job_id) for e in _all_events(busy)}
    total = count_rows(busy, events)
    result = _archive(busy, tmp_path / "a.jsonl.gz", batch_size=5)
    record = result.record
    assert record is not None
    assert record.finished
    archived = sorted(j for j in before if j.startswith(("done-", "failed-")))
    assert record.jobs == len(archived) == result.deleted_jobs
    assert record.events == sum(len(before[j]) for j in archived) == result.deleted_events
    assert result.kept == 0
    assert result.skipped == 0
    # What is left: every other job, whole; verify of it is ok and knows what was archived.
    left = {e.job_id for e in _all_events(busy)}
    assert left == set(before) - set(archived)
    assert all(busy.history(j) == before[j] for j in left)
    assert count_rows(busy, events) == total - record.events
    report = busy.verify()
    assert report.ok, report.problems
    assert report.archived == record.events
    assert busy.rebuild() == len(left)  # the projection of what remains re-folds the same
    assert busy.verify().ok
    # The file alone: every job whole from version 1, every link checked, no gaps reported.
    with gzip.open(tmp_path / "a.jsonl.gz", "rb") as file:
        alone = audit.verify_export(file)
    assert alone.ok, alone.problems
    assert (alone.jobs, alone.events, alone.sealed) == (record.jobs, record.events, record.events)
    header, lines = _read(tmp_path / "a.jsonl.gz")
    assert header["archive"]["jobs"] == record.jobs
    assert {line["job_id"] for line in lines} == set(archived)
    history = {j: [e.hash for e in before[j]] for j in archived}
    assert {j: [x["hash"] for x in lines if x["job_id"] == j] for j in archived} == history
    assert hashlib.sha256((tmp_path / "a.jsonl.gz").read_bytes()).hexdigest() == (
        record.file_sha256
    )


def _all_events(ledger: Ledger) -> list[Any]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(select(events.c.job_id).order_by(events.c.position)))


def test_an_archive_can_be_checked_with_the_standard_library_alone(
    busy: Ledger, tmp_path: Path
) -> None:
    record = _archive(busy, tmp_path / "a.jsonl.gz").record
    assert record is not None

    # README.md, "Archival": the same code, nothing but the standard library.
    def canonical(v: Any) -> str:
        if isinstance(v, dict):
            return (
                "{"
                + ",".join(
                    json.dumps(k, ensure_ascii=False) + ":" + canonical(v[k]) for k in sorted(v)
                )
                + "}"
            )
        if isinstance(v, list):
            return "[" + ",".join(canonical(x) for x in v) + "]"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return json.dumps(v, ensure_ascii=False)

    path = str(tmp_path / "a.jsonl.gz")
    heads: dict[str, Any] = {}
    with gzip.open(path, "rt", encoding="utf-8") as file:
        header = json.loads(next(file))["archive"]
        for line in file:
            e = json.loads(line)
            keys = ("data", "job_id", "process", "recorded_at", "type", "version")
            body = canonical({k: e[k] for k in keys})
            assert hashlib.sha256(f"{e['prev_hash']}\n{body}".encode()).hexdigest() == e["hash"]
            assert e["prev_hash"] == heads.get(e["job_id"], (0, "0" * 64))[1]  # whole histories
            link = {k: e[k] for k in ("hash", "job_id", "position", "version")}
            text = e["anchor"]["prev"] + "\n" + canonical({**link, "seq": e["anchor"]["seq"]})
            assert hashlib.sha256(text.encode()).hexdigest() == e["anchor"]["digest"]
            heads[e["job_id"]] = (e["version"], e["hash"])
    finals = "".join(
        json.dumps([j, v, h], ensure_ascii=False, separators=(",", ":")) + "\n"
        for j, (v, h) in sorted(heads.items())
    )
    assert hashlib.sha256(finals.encode()).hexdigest() == record.final_digest
    assert (header["jobs"], sum(v for v, _ in heads.values())) == (record.jobs, record.events)
    with open(path, "rb") as raw:
        assert hashlib.sha256(raw.read()).hexdigest() == record.file_sha256


def test_queue_stats_after_archival_equal_a_rebuild_of_what_remains(
    busy: Ledger, tmp_path: Path
) -> None:
    _archive(busy, tmp_path / "a.jsonl.gz", batch_size=4)
    kept = _nonzero(QueueStats.read(busy))
    runner = _stats(busy)
    runner.reset()
    _stats(busy)
    rebuilt = _nonzero(QueueStats.read(busy))
    assert set(kept) == set(rebuilt)
    assert rebuilt
    for key, stat in rebuilt.items():
        assert (kept[key].jobs, kept[key].runs) == (stat.jobs, stat.runs), key
        assert kept[key].run_seconds == pytest.approx(stat.run_seconds, abs=1e-6), key
        assert kept[key].max_run_seconds >= stat.max_run_seconds  # the maximum ever seen


def _nonzero(stats: list[QueueStat]) -> dict[tuple[str, str], QueueStat]:
    """The rows that count something (a queue and state every job left reads 0, 0)."""
    return {(s.queue, s.state): s for s in stats if s.jobs or s.runs}


def test_a_second_archive_merges_gaps_and_verify_stays_ok(busy: Ledger, tmp_path: Path) -> None:
    first = _archive(busy, tmp_path / "1.jsonl.gz", batch_size=3).record
    # Finish jobs that stayed open, interleaved with the gaps the first archive left.
    for n in (0, 4, 8):
        claim = busy.claim(f"open-{n:02d}", A)
        busy.complete(claim)
    _populate(busy, prefix="b-")
    seal_all(busy)
    _stats(busy)
    second = _archive(busy, tmp_path / "2.jsonl.gz", batch_size=7).record
    assert first is not None
    assert second is not None
    assert second.prev_digest == first.digest
    report = busy.verify()
    assert report.ok, report.problems
    assert report.archived == first.events + second.events
    assert [r.id for r in list_archives(busy)] == [1, 2]
    with gzip.open(tmp_path / "2.jsonl.gz", "rb") as file:
        assert audit.verify_export(file).ok


def test_a_job_deleted_without_a_record_is_still_detected(busy: Ledger, tmp_path: Path) -> None:
    _archive(busy, tmp_path / "a.jsonl.gz")
    _finish(busy, "victim")
    busy.enqueue("after-victim")
    seal_all(busy)
    _delete_whole_job(busy, "victim")
    problems = [str(p) for p in busy.verify().problems]
    assert any("missing before link" in p for p in problems), problems


def _delete_whole_job(ledger: Ledger, job_id: str) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(delete(anchor).where(anchor.c.job_id == job_id))
        conn.execute(delete(events).where(events.c.job_id == job_id))
        conn.execute(delete(jobs).where(jobs.c.job_id == job_id))
    ledger.rebuild()


def test_a_deleted_job_with_a_forged_bridge_but_no_record_is_detected(
    busy: Ledger, tmp_path: Path
) -> None:
    _archive(busy, tmp_path / "a.jsonl.gz")
    _finish(busy, "victim")
    busy.enqueue("after-victim")
    seal_all(busy)
    with busy.engine.connect() as conn:
        links = conn.execute(
            select(anchor.c.seq, anchor.c.digest).where(anchor.c.job_id == "victim")
        ).all()
    last_seq, last_digest = max(links)
    _delete_whole_job(busy, "victim")
    with busy.engine.begin() as conn:  # the forger bridges the gap as archival would
        conn.execute(
            insert(anchor_bridges).values(seq=last_seq + 1, prev_digest=last_digest, archive_id=1)
        )
    problems = [str(p) for p in busy.verify().problems]
    recorded = _recorded(busy)
    assert problems == [
        f"job '?': {recorded + len(links)} anchor links are missing behind bridges, but the "
        f"archive records account for {recorded} deleted events"
    ]


def _recorded(ledger: Ledger) -> int:
    return sum(r.deleted_events for r in list_archives(ledger))


def test_an_edited_record_is_detected(busy: Ledger, tmp_path: Path) -> None:
    _archive(busy, tmp_path / "a.jsonl.gz")
    with busy.engine.begin() as conn:
        conn.execute(update(archives).values(jobs=archives.c.jobs + 1))
    problems = [str(p) for p in busy.verify().problems]
    assert any("archive record 1 was changed" in p for p in problems), problems


def test_a_record_claiming_more_deletions_is_detected(busy: Ledger, tmp_path: Path) -> None:
    _archive(busy, tmp_path / "a.jsonl.gz")
    with busy.engine.begin() as conn:
        conn.execute(update(archives).values(deleted_events=archives.c.deleted_events + 1))
    problems = [str(p) for p in busy.verify().problems]
    assert any("the archive records account for" in p for p in problems), problems


def test_a_stray_bridge_is_detected(busy: Ledger, tmp_path: Path) -> None:
    _archive(busy, tmp_path / "a.jsonl.gz")
    before = anchor.alias("before")
    with busy.engine.connect() as conn:  # a link whose predecessor is there
        last = conn.execute(
            select(func.max(anchor.c.seq)).where(before.c.seq == anchor.c.seq - 1)
        ).scalar_one()
    with busy.engine.begin() as conn:
        conn.execute(insert(anchor_bridges).values(seq=last, prev_digest="0" * 64, archive_id=1))
    problems = [str(p) for p in busy.verify().problems]
    assert f"job '?': anchor bridge at link {last} stands where no link is missing" in problems


def test_a_published_head_that_was_archived_is_named_not_passed(
    ledger: Ledger, tmp_path: Path
) -> None:
    _finish(ledger, "early")
    seal_all(ledger)
    head = ledger.head()
    assert head is not None
    _populate(ledger)
    seal_all(ledger)
    _stats(ledger)
    _archive(ledger, tmp_path / "a.jsonl.gz")
    problems = [str(p) for p in ledger.verify(head=head).problems]
    assert len(problems) == 1, problems
    assert f"link {head.seq} was archived" in problems[0]
    assert str(tmp_path / "a.jsonl.gz") in problems[0]
    with gzip.open(tmp_path / "a.jsonl.gz", "rb") as file:
        assert audit.verify_export(file, head=head).ok
    with gzip.open(tmp_path / "a.jsonl.gz", "rb") as file:  # a different digest fails
        report = audit.verify_export(file, head=Head(head.seq, "0" * 64))
    assert [str(p) for p in report.problems] == [
        f"job '?': anchor link {head.seq} is not the published head: history up to it was rewritten"
    ]


def test_unsealed_and_undelivered_jobs_wait(ledger: Ledger, tmp_path: Path) -> None:
    _finish(ledger, "sealed")
    ledger.enqueue("last")
    seal_all(ledger)
    _finish(ledger, "not-sealed-yet")
    ledger.enqueue("later")
    result = _archive(ledger, tmp_path / "a.jsonl.gz")
    assert result.record is not None
    assert result.record.jobs == 1
    assert result.skipped == 1
    assert ledger.status("not-sealed-yet").state == "completed"
    # A projection that has not seen a job's events holds it back too.
    seal_all(ledger)
    CatchUp(ledger, QueueStats()).checkpoint()  # created at position 0: has seen nothing
    result = _archive(ledger, tmp_path / "b.jsonl.gz")
    assert result.record is None
    assert result.skipped == 1
    assert not (tmp_path / "b.jsonl.gz").exists()
    assert ledger.verify().ok


def test_the_job_holding_the_last_link_is_never_archived(ledger: Ledger, tmp_path: Path) -> None:
    _finish(ledger, "first")
    _finish(ledger, "holder")
    seal_all(ledger)
    result = _archive(ledger, tmp_path / "a.jsonl.gz")
    assert result.record is not None
    assert result.record.jobs == 1
    assert result.skipped == 1
    assert ledger.status("holder").state == "completed"
    assert ledger.verify().ok
    Sealer(ledger).run_once()  # the sealer still chains on from the last link
    ledger.enqueue("next")
    seal_all(ledger)
    assert ledger.verify().ok


def test_bad_requests_are_refused_and_delete_nothing(busy: Ledger, tmp_path: Path) -> None:
    total = count_rows(busy, events)
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(ArchiveError, match="in the future"):
        archive(busy, future, tmp_path / "a.jsonl.gz")
    with pytest.raises(ArchiveError, match="time zone"):
        archive(busy, datetime(2026, 1, 1), tmp_path / "a.jsonl.gz")
    with pytest.raises(ArchiveError, match="cannot write"):
        _archive(busy, tmp_path / "no-such-dir" / "a.jsonl.gz")
    (tmp_path / "taken.jsonl.gz").write_bytes(b"someone's file")
    with pytest.raises(ArchiveError, match="exists and is no unfinished archive"):
        _archive(busy, tmp_path / "taken.jsonl.gz")
    assert (tmp_path / "taken.jsonl.gz").read_bytes() == b"someone's file"
    assert count_rows(busy, events) == total
    assert list_archives(busy) == []
    assert [name for name in os.listdir(tmp_path) if "jsonl" in name] == ["taken.jsonl.gz"]


def test_an_archived_job_id_can_be_enqueued_again_as_a_new_job(
    busy: Ledger, tmp_path: Path
) -> None:
    _archive(busy, tmp_path / "a.jsonl.gz")
    status = busy.enqueue("done-00")
    assert status.version == 1  # a new chain from GENESIS; the old one is in the file
    assert busy.verify().ok


def test_a_job_written_to_the_file_then_changed_stays_whole(
    busy: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobledger import archive as archival

    stale = busy.claim("open-00", A)  # a claim that will be stale once the job is done
    busy.release(stale)
    claim = busy.claim("open-00", A)
    busy.complete(claim)
    busy.enqueue("last-2")
    seal_all(busy)
    _stats(busy)
    publish = archival._publish

    def late_write(partial: str, path: str) -> None:  # between the record and the deletion
        with pytest.raises(StaleClaim):
            busy.complete(stale)  # refused, and the refusal ("rejected") is appended
        publish(partial, path)

    monkeypatch.setattr(archival, "_publish", late_write)
    result = _archive(busy, tmp_path / "a.jsonl.gz")
    assert result.kept == 1
    assert [e.type for e in busy.history("open-00")][-1] == "rejected"
    report = busy.verify()
    assert report.ok, report.problems


def test_two_archivers_at_once_record_one_archive(busy: Ledger, tmp_path: Path) -> None:
    cutoff = _now(busy)
    outcomes: list[Any] = []

    def run(name: str) -> None:
        try:
            outcomes.append(archive(busy, cutoff, tmp_path / name, batch_size=3))
        except ArchiveError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(f"{n}.jsonl.gz",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = list_archives(busy)
    # The loser was refused (or, had it come after the winner, found nothing left to archive).
    done = [o for o in outcomes if isinstance(o, ArchiveResult) and o.record is not None]
    assert len(records) == 1
    assert len(done) == 1, outcomes
    assert done[0].record == records[0]
    assert records[0].deleted_events == records[0].events
    assert sorted(n for n in os.listdir(tmp_path) if "jsonl" in n) == [
        os.path.basename(records[0].path)
    ]
    report = busy.verify()
    assert report.ok, report.problems
