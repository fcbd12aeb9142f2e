"""Export to JSON lines, and checking an exported file without a database.

Each line is one event with its position, hashes and canonical timestamp,
enough to check every hash and every job's chain with any SHA-256 and JSON
tool (README.md, "Hash chain"). export reads in bulk, in position order
(:meth:`jobledger.audit.bulk.Bulk.by_position`), in one snapshot.

A full export (no ``since``) also carries each sealed event's anchor link
(:mod:`jobledger.anchor`) in the event's line: ``"anchor": {"digest", "prev",
"seq"}``, ``prev`` being the digest of link ``seq - 1``. Each link is checked
against its own line, and links are matched to their neighbours as they come
(they come in position order, not seal order, so the few that wait for a
neighbour are kept): a missing link is a gap, and a published head names one
link that must be there with its digest. Lines without ``anchor`` are events
not sealed when the export ran; older exports have none and still verify.

An archive file (:mod:`jobledger.archive`) is an export of whole jobs with a
header line first, ``{"archive": {"cutoff", "events", "format", "jobs"}}``:
every job must start at version 1, the counts must match, and its links are a
sparse part of the anchor, so gaps between them are not problems.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from sqlalchemy import Engine

from ..anchor import Head, link_digest
from ..chain import BAD_HASH, GENESIS, broken_link, chain_hash
from ..encoding import canonical_string
from . import session
from .payloads import JsonStrings, StoredPayloads
from .verification import VerifyReport


def export(
    engine: Engine, out: TextIO, since: int | None = None, progress: session.Progress | None = None
) -> int:
    """Write events after position ``since`` (all if ``None``) as JSON lines; how many.

    Each line is one event with its position, hashes and canonical timestamp,
    enough to check the chain without the database (:func:`verify_export`):
    canonical JSON (keys sorted, no whitespace), newline included.
    """
    written = 0
    with session.snapshot(engine) as conn:
        bulk = session.bulk_for(conn)
        total = session.count_events(conn, since) if progress is not None else 0
        encoded = StoredPayloads().encoded
        canonical = bulk.canonical_time
        strings = JsonStrings()  # event types and processes
        lines: list[str] = []  # written a batch at a time: one write per line costs more
        line = lines.append
        for row in bulk.by_position(since, anchored=since is None):
            job_id, version, kind, process, data, moment, prev_hash, hash_, position = row[:9]
            type_json = strings[kind]
            process_json = "null" if process is None else strings[process]
            line(
                f'{{{_anchor_member(row)}"data":{encoded(data)[0]},"hash":"{hash_}",'
                f'"job_id":{canonical_string(job_id)},"position":{int(position)},'
                f'"prev_hash":"{prev_hash}","process":{process_json},'
                f'"recorded_at":"{canonical(moment)}","type":{type_json},"version":{version}}}\n'
            )
            if len(lines) == _LINES_PER_WRITE:
                written += _flush(out, lines)
                if progress is not None and written % session.BATCH_SIZE == 0:
                    progress(written, total)
        written += _flush(out, lines)
    if progress is not None:
        progress(written, written)
    return written


#: Lines joined into one write (BATCH_SIZE, the progress step, is a multiple of it).
_LINES_PER_WRITE = 1000


def _flush(out: TextIO, lines: list[str]) -> int:
    """Write ``lines`` to ``out`` at once and empty the list; how many there were."""
    out.write("".join(lines))
    count = len(lines)
    lines.clear()
    return count


def _anchor_member(row: Any) -> str:
    """``"anchor":{...},`` for a sealed event's row of ``by_position(anchored=True)``."""
    if len(row) == 9 or row[9] is None:
        return ""
    seq, digest, previous = int(row[9]), row[10], row[11] or GENESIS
    return f'"anchor":{{"digest":"{digest}","prev":"{previous}","seq":{seq}}},'


#: The keys of every exported line (a sealed event's line in a full export adds "anchor").
EXPORT_KEYS = frozenset(
    ("data", "hash", "job_id", "position", "prev_hash", "process", "recorded_at", "type", "version")
)
ANCHOR_KEYS = frozenset(("digest", "prev", "seq"))


def verify_export(lines: Iterable[str | bytes], head: Head | None = None) -> VerifyReport:
    """Check an exported file without a database: every hash, every job's chain, the anchor.

    ``lines`` are text, or bytes of UTF-8 text (a file opened in binary mode: a line
    that is not UTF-8 is then one problem, not the end of the check). A line that
    is no event of the expected shape and types is reported and skipped.

    Memory grows with the number of jobs (one hash each), not events. A job
    whose first line has a version above 1 is taken to continue an earlier
    export (``--since``): its chain is checked from there on.

    The anchor links the lines carry must chain from link 1 without a gap, each
    matching its event; with ``head``, link ``head.seq`` must be there with
    ``head.digest``.
    """
    report = VerifyReport()
    links = _Links(report, head)
    #: job -> (the version its next line must have, the hash it must chain from)
    expected: dict[str, tuple[int, str]] = {}
    last_position = 0
    archive: dict[str, Any] | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == 1:
            archive = _archive_header(line)
            if archive is not None:
                links.sparse = True
                continue
        record = _parse_line(line, number, report)
        if record is None:
            continue
        report.events += 1
        job_id, version = record["job_id"], record["version"]
        if record["position"] <= last_position:
            report.add(job_id, version, f"line {number}: positions do not increase")
        last_position = record["position"]
        try:
            recomputed = chain_hash(
                record["prev_hash"],
                job_id,
                version,
                record["type"],
                record["process"],
                record["data"],
                record["recorded_at"],
            )
        except RecursionError:  # data nested deeper than any ledger stores: not its event
            recomputed = None
        if recomputed != record["hash"]:
            report.add(job_id, version, BAD_HASH)
        # A job first seen past version 1 continues an earlier export: nothing to link to.
        first = version == 1 or archive is not None  # an archive holds whole histories
        link = expected.get(job_id) or ((1, GENESIS) if first else None)
        if link is not None and (version, record["prev_hash"]) != link:
            report.add(job_id, version, broken_link(*link, version, record["prev_hash"]))
        expected[job_id] = (version + 1, record["hash"])
        link = record.get("anchor")
        if link is None:
            report.unsealed += 1
        else:
            links.add(link, record)
    report.jobs = len(expected)
    links.finish(head)
    if archive is not None and (archive["jobs"], archive["events"]) != (report.jobs, report.events):
        report.add(
            "?",
            None,
            f"the archive's header promises {archive['jobs']} jobs and {archive['events']} "
            f"events; the file holds {report.jobs} and {report.events}",
        )
    return report


#: The ``format`` of an archive's header line.
ARCHIVE_FORMAT = "jobledger-archive/1"


def _archive_header(line: str | bytes) -> dict[str, Any] | None:
    """The header of an archive file, if ``line`` is one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or set(record) != {"archive"}:
        return None
    header = record["archive"]
    if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
        return None
    if not (_is_int(header.get("jobs")) and _is_int(header.get("events"))):
        return None
    return header


def _parse_line(line: str | bytes, number: int, report: VerifyReport) -> dict[str, Any] | None:
    """The event on ``line``, or ``None`` after reporting why it is none."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        report.add("?", None, f"line {number} is not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to read
        report.add("?", None, f"line {number} is not JSON ({exc})")
        return None
    if not isinstance(record, dict) or set(record) - {"anchor"} != EXPORT_KEYS:
        report.add("?", None, f"line {number} is not an exported event")
        return None
    job_id = record["job_id"] if isinstance(record["job_id"], str) else "?"
    link = record.get("anchor")
    if "anchor" in record and not _is_link(link):
        report.add(job_id, None, f"line {number}: anchor must be {_LINK_SHAPE}, not {link!r}")
        return None
    for key, wanted, fits in _FIELD_TYPES:
        if not fits(record[key]):
            report.add(job_id, None, f"line {number}: {key} must be {wanted}, not {record[key]!r}")
            return None
    return record


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not float (1.5, or 1.0 of another exporter)


#: What each exported field must hold: (key, what it must be, check).
_FIELD_TYPES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("job_id", "a string", lambda v: isinstance(v, str)),
    ("version", "an integer of at least 1", lambda v: _is_int(v) and v >= 1),
    ("position", "an integer", _is_int),
    ("type", "a string", lambda v: isinstance(v, str)),
    ("process", "a string or null", lambda v: v is None or isinstance(v, str)),
    ("recorded_at", "a string", lambda v: isinstance(v, str)),
    ("prev_hash", "a string", lambda v: isinstance(v, str)),
    ("hash", "a string", lambda v: isinstance(v, str)),
)


_LINK_SHAPE = "an object of digest, prev (strings) and seq (an integer of at least 1)"


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == ANCHOR_KEYS
        and _is_int(value["seq"])
        and value["seq"] >= 1
        and isinstance(value["digest"], str)
        and isinstance(value["prev"], str)
    )


class _Links:
    """The anchor links of an export, checked as they come (in position order).

    Each link must recompute from its ``prev`` and its line's event; and link
    ``n``'s ``prev`` must be link ``n - 1``'s digest. A link whose neighbour has
    not come yet waits in a dict: seal order and position order differ only by
    the few transactions in flight at once, so few wait. Links that still wait
    at the end are gaps.
    """

    def __init__(self, report: VerifyReport, head: Head | None) -> None:
        self.report = report
        self.digests: dict[int, tuple[str, str, int]] = {}  # seq -> digest, for link seq + 1
        self.prevs: dict[int, tuple[str, str, int]] = {}  # seq -> prev, for link seq - 1
        self.seen: dict[int, str] = {}  # head.seq -> its digest, once seen
        self.highest = 0
        self.head_seq = None if head is None else head.seq
        self.sparse = False  # an archive's links: gaps between them are expected

    def add(self, link: dict[str, Any], record: dict[str, Any]) -> None:
        report = self.report
        seq, digest, previous = link["seq"], link["digest"], link["prev"]
        job_id, version = record["job_id"], record["version"]
        report.sealed += 1
        self.highest = max(self.highest, seq)
        if (
            link_digest(previous, seq, record["position"], job_id, version, record["hash"])
            != digest
        ):
            report.add(job_id, version, f"anchor link {seq} does not match the event it seals")
        if seq == self.head_seq:
            self.seen[seq] = digest
        if seq in self.digests or seq in self.prevs:
            report.add(job_id, version, f"anchor link {seq} appears twice")
            return
        if seq == 1:
            if previous != GENESIS:
                report.add(job_id, version, "anchor link 1 does not start from GENESIS")
        elif seq - 1 in self.digests:
            before, _, _ = self.digests.pop(seq - 1)
            if before != previous:
                report.add(job_id, version, f"anchor link {seq} does not follow link {seq - 1}")
        else:
            self.prevs[seq] = (previous, job_id, version)
        if seq + 1 in self.prevs:
            after, after_job, after_version = self.prevs.pop(seq + 1)
            if after != digest:
                report.add(
                    after_job, after_version, f"anchor link {seq + 1} does not follow link {seq}"
                )
        else:
            self.digests[seq] = (digest, job_id, version)

    def finish(self, head: Head | None) -> None:
        """Report the gaps, and check ``head``; ``report.head`` is the last link."""
        report = self.report
        if self.sparse:
            self._finish_sparse(head)
            return
        for seq, (_, job_id, version) in sorted(self.prevs.items()):
            report.add(job_id, version, f"anchor link {seq - 1} is missing (link {seq} follows it)")
        last = self.digests.pop(self.highest, None)
        for seq, (_, job_id, version) in sorted(self.digests.items()):
            report.add(
                job_id, version, f"anchor link {seq + 1} is missing (link {seq} leads to it)"
            )
        if report.sealed > self.highest:
            extra = report.sealed - self.highest
            report.add("?", None, f"{extra} anchor links appear more than once")
        if last is not None:
            report.head = Head(self.highest, last[0])
        if head is None:
            return
        if head.seq > self.highest:
            ends = f"ends at link {self.highest}" if self.highest else "carries no anchor"
            report.add(
                "?", None, f"the published head's link {head.seq} is gone (the export {ends})"
            )
        elif self.seen.get(head.seq) != head.digest:
            report.add(
                "?",
                None,
                f"anchor link {head.seq} is not the published head: history up to it was rewritten",
            )

    def _finish_sparse(self, head: Head | None) -> None:
        """An archive's end: no gaps to report; a head must be among its links."""
        report = self.report
        if head is None:
            return
        if head.seq not in self.seen:
            report.add("?", None, f"the published head's link {head.seq} is not in this archive")
        elif self.seen[head.seq] != head.digest:
            report.add(
                "?",
                None,
                f"anchor link {head.seq} is not the published head: history up to it was rewritten",
            )
