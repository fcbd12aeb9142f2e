"""What verify knows of archival (:mod:`jobledger.archive`): records, bridges, the digests.

Archival deletes whole jobs with their anchor links, so the anchor has gaps.
Each remaining link after a gap has a *bridge* row holding its predecessor's
digest, and verify recomputes the link's digest from it as if the predecessor
were there. The gaps must add up to the events the archive records say were
deleted: a job deleted without a record, or bridged by hand without one, leaves
links missing that no record accounts for. The records are chained by their
digests, so an edited record shows too. Both digests are defined here, where
verify and the archiver can both reach them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from ..anchor import GENESIS, Head
from ..encoding import canonical_json, canonical_time
from ..schema import anchor_bridges, archives
from .verification import VerifyReport

#: The record's columns its digest covers (the deletion counters and ``finished_at`` move).
SEALED_FIELDS = (
    "id",
    "path",
    "cutoff",
    "jobs",
    "events",
    "first_seq",
    "last_seq",
    "final_digest",
    "file_sha256",
    "created_at",
)


def record_digest(previous: str, fields: Any) -> str:
    """``sha256(previous + "\\n" + canonical JSON of the sealed fields)``, instants canonical."""
    body = {
        name: canonical_time(fields[name]) if isinstance(fields[name], datetime) else fields[name]
        for name in SEALED_FIELDS
    }
    return hashlib.sha256(f"{previous}\n{canonical_json(body)}".encode()).hexdigest()


def final_digest(finals: Iterable[tuple[str, int, str]]) -> str:
    """SHA-256 over the archived jobs' last events, ``(job_id, version, hash)`` each.

    The hex SHA-256 of the UTF-8 of one line per job, sorted by job id (code
    points), each the canonical JSON array ``["job_id",version,"hash"]`` and a newline.
    """
    sha = hashlib.sha256()
    for job_id, version, hash_ in sorted(finals):
        sha.update((canonical_json([job_id, version, hash_]) + "\n").encode("utf-8"))
    return sha.hexdigest()


class Archived:
    """The archive records and bridges, read in verify's snapshot; the links found missing."""

    def __init__(self, records: list[Any], bridges: dict[int, str]) -> None:
        self.records = records
        self.bridges = bridges  # seq -> its predecessor's digest; verify pops the ones it uses
        self.missing = 0  # links verify found missing behind a bridge

    @classmethod
    def read(cls, conn: Connection, report: VerifyReport) -> Archived:
        """Read them, and report records whose digests do not chain."""
        records = conn.execute(select(archives).order_by(archives.c.id)).all()
        previous = GENESIS
        for number, record in enumerate(records, start=1):
            if record.id != number:
                report.add(
                    "?", None, f"archive record {number} is missing (record {record.id} follows)"
                )
            recomputed = record_digest(previous, record._mapping)
            if record.prev_digest != previous or recomputed != record.digest:
                report.add(
                    "?",
                    None,
                    f"archive record {record.id} was changed (its digest does not recompute "
                    "from its fields and the record before it)",
                )
            previous = record.digest
        query = select(anchor_bridges.c.seq, anchor_bridges.c.prev_digest)
        return cls(list(records), {row.seq: row.prev_digest for row in conn.execute(query)})

    def holding(self, seq: int) -> list[Any]:
        """The records whose archived links span link ``seq``."""
        return [
            r for r in self.records if r.first_seq is not None and r.first_seq <= seq <= r.last_seq
        ]

    def report_archived_head(self, report: VerifyReport, head: Head) -> bool:
        """Report a published head whose link was archived; ``False`` if none holds it."""
        holders = self.holding(head.seq)
        if not holders:
            return False
        files = ", ".join(f"archive {r.id} ({r.path})" for r in holders)
        report.add(
            "?",
            None,
            f"the published head's link {head.seq} was archived, so the database cannot check "
            f"it: it is in {files}; check it with `jobledger verify-export FILE --head {head}`",
        )
        return True

    def finish(self, report: VerifyReport) -> None:
        """Report bridges over no gap, and gaps no record accounts for."""
        for seq in sorted(self.bridges):
            report.add("?", None, f"anchor bridge at link {seq} stands where no link is missing")
        deleted = sum(r.deleted_events for r in self.records)
        report.archived = deleted
        if deleted != self.missing:
            report.add(
                "?",
                None,
                f"{self.missing} anchor links are missing behind bridges, but the archive "
                f"records account for {deleted} deleted events",
            )
