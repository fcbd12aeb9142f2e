"""Checking the ledger-wide anchor (:mod:`jobledger.sealer` writes it) against the events.

verify streams the anchor once in ``seq`` order, each link joined to the event
at its position (the events' primary key), in verify's snapshot, and checks:

* the links run 1, 2, 3 ... and each digest recomputes from the previous link's
  digest and the event at its position (:func:`jobledger.anchor.link_digest`):
  an edited event hash, a moved event or an edited link breaks it;
* an event exists at each sealed position, the sealed job and version: a deleted
  job, a dropped event, a renumbered position, a truncated log each leave a link
  without its event;
* no position is sealed twice;
* the last link seals the position the sealer's checkpoint names: links cut off
  the end of the anchor are missed otherwise;
* every event the sealer has passed is sealed;
* where archival removed links (:mod:`jobledger.archive`), the link after each
  gap has a bridge holding its predecessor's digest, the digests recompute
  across it, and the links missing add up to the events the archive records
  say were deleted (:mod:`jobledger.audit.archived`). The events after its checkpoint
  are the *unsealed tail*: counted, not a problem. Counting costs one indexed
  count of that tail; the events are named only when some are missing.

With a published head (``SEQ:DIGEST``, :class:`jobledger.anchor.Head`) it also
checks that link ``SEQ`` still has that digest, so that history up to the head
cannot have been rewritten and re-sealed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Text,
    and_,
    cast,
    exists,
    func,
    literal,
    not_,
    select,
    tuple_,
)

from ..anchor import GENESIS, NAME, Head, encoded_link_digest
from ..database import translated_errors
from ..encoding import canonical_string
from ..schema import TransactionId, anchor, checkpoints, events
from . import session
from .archived import Archived
from .verification import MAX_PROBLEMS, VerifyReport

#: Links checked between two looks at the other work verify interleaves (see AnchorCheck.steps).
STEP = 2048


def check_anchor(conn: Connection, report: VerifyReport, head: Head | None = None) -> None:
    """Check the anchor in ``conn``'s snapshot; ``report.events`` must hold the event count."""
    AnchorCheck(conn, head).finish(report)


class AnchorCheck:
    """The anchor's check, in steps that other work can interleave with.

    verify streams the links on its own connection while its workers check the
    events (:func:`jobledger.audit.shards.run` takes :meth:`steps` as side work):
    the two share nothing but the snapshot. Problems go to a report of the
    anchor's own, which :meth:`finish` appends after the events' problems, in
    the order the check found them.
    """

    def __init__(self, conn: Connection, head: Head | None) -> None:
        self.report = VerifyReport()
        self._conn, self._head = conn, head
        self._checkpoint = conn.execute(
            select(checkpoints.c.position, checkpoints.c.tx_id).where(checkpoints.c.name == NAME)
        ).first()
        self._archived = Archived.read(conn, self.report)
        # One bit per position, to find a position sealed twice: a link only gets here if
        # an event is at its position, so no position exceeds the largest event's.
        largest = conn.execute(select(func.max(events.c.position))).scalar() or 0
        self._seen = bytearray(largest // 8 + 1)
        self._matched, self._last, self._head_digest = 0, 0, None
        self._previous = GENESIS
        self._stream = self._check_links()

    def steps(self) -> Iterator[None]:
        """Check the next :data:`STEP` links at each step, until all are checked."""
        return self._stream

    def close(self) -> None:
        """Stop an unfinished check: its stream holds the connection (a COPY on PostgreSQL)
        until it is closed, and a rollback would wait for it forever."""
        self._stream.close()

    def finish(self, report: VerifyReport) -> None:
        """Check what is left, then what needs ``report.events``; add it all to ``report``."""
        for _ in self._stream:
            pass
        mine, archived, checkpoint = self.report, self._archived, self._checkpoint
        archived.finish(mine)
        last = Head(self._last, self._previous) if self._last else None
        if self._head is not None and not (
            self._head_digest is None and archived.report_archived_head(mine, self._head)
        ):
            _check_head(mine, self._head, self._head_digest, last)
        mine.head = last
        if checkpoint is None:
            mine.unsealed = report.events  # nothing was ever sealed
            if last is not None:
                mine.add("?", None, "the anchor has links but the sealer's checkpoint is gone")
        else:
            self._check_checkpoint(checkpoint, last, report.events)
        _add_anchor(report, mine)

    def _check_checkpoint(self, checkpoint: Any, last: Head | None, events: int) -> None:
        mine, conn = self.report, self._conn
        if checkpoint.position > 0:
            last_position = None if last is None else _position_of(conn, last.seq)
            if last_position != checkpoint.position:
                mine.add(
                    "?",
                    None,
                    f"the sealer's checkpoint is at position {checkpoint.position} but the "
                    f"anchor's last link seals {last_position}: links were removed from the "
                    "anchor's end",
                )
        mine.unsealed = _count_past(conn, checkpoint)
        if events - self._matched != mine.unsealed:
            _report_unsealed(conn, mine, checkpoint)

    def _check_links(self) -> Generator[None, None, None]:
        """Stream the links, checking each; yields every :data:`STEP` links."""
        add = self.report.add
        archived = self._archived
        bridges, seen = archived.bridges, self._seen
        previous, expected, matched, last_seq, links = GENESIS, 1, 0, 0, 0
        head_seq = None if self._head is None else self._head.seq
        for (
            seq,
            position,
            job_id,
            version,
            digest,
            event_job,
            event_version,
            event_hash,
        ) in session.bulk_for(self._conn).links():
            links += 1
            if not links % STEP:
                yield
            if seq > expected and seq in bridges:  # archival removed links expected .. seq - 1
                archived.missing += seq - expected
                previous, expected = bridges.pop(seq), seq
            if (
                seq == expected
                and event_job == job_id
                and event_version == version
                and position >= 0  # (a tampered one would index the bitmap from its end)
            ):
                byte, mask = seen[position >> 3], 1 << (position & 7)
                if byte & mask:
                    add(job_id, version, f"position {position} is sealed twice (link {seq})")
                else:
                    seen[position >> 3] = byte | mask
                    matched += 1
                recomputed = encoded_link_digest(
                    previous, seq, position, canonical_string(job_id), version, event_hash
                )
                if recomputed != digest:
                    add(
                        job_id,
                        version,
                        f"anchor link {seq} does not match the event it seals "
                        "(the event's hash or the link was changed)",
                    )
            else:
                add(job_id, version, _broken(seq, expected, position, event_job, event_version))
            previous, last_seq = digest, seq
            if seq >= expected:
                expected = seq + 1
            if seq == head_seq:
                self._head_digest = digest
        self.report.sealed = links
        self._matched, self._last, self._previous = matched, last_seq, previous


def _add_anchor(report: VerifyReport, anchor_report: VerifyReport) -> None:
    """Append the anchor's findings to verify's report, after the events' problems."""
    report.add_problems(anchor_report)
    report.sealed, report.unsealed = anchor_report.sealed, anchor_report.unsealed
    report.head, report.archived = anchor_report.head, anchor_report.archived


def _broken(
    seq: int, expected: int, position: int, event_job: str | None, event_version: int | None
) -> str:
    """Why link ``seq`` (``expected`` was due) is not a link to its event."""
    if seq < expected:
        return f"anchor link {seq} is out of order"
    if seq > expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected} to {seq - 1}"
        return f"anchor links {missing} are missing before link {seq}"
    if event_job is None:
        return f"the event sealed at position {position} (link {seq}) is gone"
    if position < 0:
        return f"anchor link {seq} seals a negative position, {position}"
    return (
        f"position {position} (link {seq}) holds job {event_job!r} version {event_version}, "
        "not this sealed event"
    )


def _check_head(report: VerifyReport, head: Head, found: str | None, last: Head | None) -> None:
    if found is None:
        ends = "is empty" if last is None else f"ends at link {last.seq}"
        report.add("?", None, f"the published head's link {head.seq} is gone (the anchor {ends})")
    elif found != head.digest:
        report.add(
            "?",
            None,
            f"anchor link {head.seq} is not the published head: history up to it was rewritten",
        )


def _position_of(conn: Connection, seq: int) -> int | None:
    position: int | None = conn.execute(
        select(anchor.c.position).where(anchor.c.seq == seq)
    ).scalar()
    return position


def _past(checkpoint: Any) -> Any:
    """Events after the sealer's checkpoint, in catch-up's order (the writer's id first)."""
    return past_checkpoint(checkpoint, events)


def past_checkpoint(checkpoint: Any, table: Any) -> Any:
    """Rows of ``table`` (the events, or an alias) after a catch-up checkpoint."""
    if checkpoint.tx_id is None:  # one writer at a time: position order is commit order
        return table.c.position > checkpoint.position
    after = cast(cast(literal(checkpoint.tx_id, BigInteger), Text), TransactionId)
    return tuple_(table.c.tx_id, table.c.position) > tuple_(after, literal(checkpoint.position))


def _count_past(conn: Connection, checkpoint: Any) -> int:
    count: int = conn.execute(
        select(func.count()).select_from(events).where(_past(checkpoint))
    ).scalar_one()
    return count


def _report_unsealed(conn: Connection, report: VerifyReport, checkpoint: Any) -> None:
    """Name the events the sealer has passed that the anchor does not hold."""
    unsealed = not_(exists().where(anchor.c.position == events.c.position))
    passed = and_(unsealed, not_(_past(checkpoint)))
    query = (
        select(events.c.job_id, events.c.version, events.c.position)
        .where(passed)
        .order_by(events.c.position)
        .limit(MAX_PROBLEMS)
    )
    for job_id, version, position in conn.execute(query):
        report.add(
            job_id,
            version,
            f"event at position {position} is not in the anchor, though the sealer has passed it",
        )


def last_link(engine: Engine) -> Head | None:
    """The anchor's last link, the head to publish; ``None`` before anything is sealed."""
    with translated_errors(engine), engine.connect() as conn:
        row = conn.execute(
            select(anchor.c.seq, anchor.c.digest).order_by(anchor.c.seq.desc()).limit(1)
        ).first()
    return None if row is None else Head(row.seq, row.digest)
