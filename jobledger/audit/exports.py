"""Export to JSON lines, and checking an exported file without a database.

Each line is one event with its position, hashes and canonical timestamp,
enough to check every hash and every job's chain with any SHA-256 and JSON
tool (README.md, "Hash chain"). export reads in bulk, in position order
(:meth:`jobledger.audit.bulk.Bulk.by_position`), in one snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from sqlalchemy import Engine

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
        write = out.write
        for row in bulk.by_position(since):
            job_id, version, kind, process, data, moment, prev_hash, hash_, position = row
            type_json = strings[kind]
            process_json = "null" if process is None else strings[process]
            write(
                f'{{"data":{encoded(data)[0]},"hash":"{hash_}",'
                f'"job_id":{canonical_string(job_id)},"position":{int(position):d},'
                f'"prev_hash":"{prev_hash}","process":{process_json},'
                f'"recorded_at":"{canonical(moment)}","type":{type_json},"version":{version:d}}}\n'
            )
            written += 1
            if progress is not None and written % session.BATCH_SIZE == 0:
                progress(written, total)
    if progress is not None:
        progress(written, written)
    return written


#: The keys of every exported line.
EXPORT_KEYS = frozenset(
    ("data", "hash", "job_id", "position", "prev_hash", "process", "recorded_at", "type", "version")
)


def verify_export(lines: Iterable[str | bytes]) -> VerifyReport:
    """Check an exported file without a database: every hash, and every job's chain.

    ``lines`` are text, or bytes of UTF-8 text (a file opened in binary mode: a line
    that is not UTF-8 is then one problem, not the end of the check). A line that
    is no event of the expected shape and types is reported and skipped.

    Memory grows with the number of jobs (one hash each), not events. A job
    whose first line has a version above 1 is taken to continue an earlier
    export (``--since``): its chain is checked from there on.
    """
    report = VerifyReport()
    #: job -> (the version its next line must have, the hash it must chain from)
    expected: dict[str, tuple[int, str]] = {}
    last_position = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
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
        link = expected.get(job_id) or ((1, GENESIS) if version == 1 else None)
        if link is not None and (version, record["prev_hash"]) != link:
            report.add(job_id, version, broken_link(*link, version, record["prev_hash"]))
        expected[job_id] = (version + 1, record["hash"])
    report.jobs = len(expected)
    return report


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
    if not isinstance(record, dict) or set(record) != EXPORT_KEYS:
        report.add("?", None, f"line {number} is not an exported event")
        return None
    job_id = record["job_id"] if isinstance(record["job_id"], str) else "?"
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
