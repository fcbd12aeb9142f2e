"""Bulk reads and writes for verify, rebuild and export, one adapter per backend.

verify and rebuild read every event of a range of job ids in ``(job_id, version)``
order, and verify reads the projection rows of the same range *in the same
stream*, each where it falls among the jobs. On PostgreSQL the database merges
the two (a ``UNION ALL``), because Python's order of strings is not every
collation's; SQLite's order of UTF-8 text is Python's, and two cursors merged
here cost less than SQLite's own merge. Every adapter delivers rows of two shapes,
named by :class:`EventRow` and :class:`ProjectedRow`:

* an event: ``(job_id, version, type, process, data, recorded_at, prev_hash, hash)``,
  sometimes followed by empty padding (``by_position`` adds the position instead);
* a projection row: ``(job_id, version, None, queue, state, attempt, ...)``, every
  column of the projection. An event's type is never NULL, so ``None`` marks these.

``version`` is an int and every other value text or ``None``: payloads as the
stored JSON text, numbers as decimal text, and instants as the database's own
text for them (a *moment*). Verify and rebuild fold moments as they are: one
backend writes one instant as one text, so comparing texts compares instants,
and :meth:`Bulk.canonical_time` turns a moment into the hashed form with a few
slices, cheaper than a datetime per value (see ``benchmarks/README.md``).

The adapters talk to the driver directly: PostgreSQL streams COPY text
(:mod:`jobledger.audit.postgres`), SQLite reads through sqlite3 without
SQLAlchemy's result layer (:mod:`jobledger.audit.sqlite`), and other databases go
through SQLAlchemy (:class:`CoreBulk`, here).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Select,
    Text,
    cast,
    insert,
    literal,
    null,
    select,
    text,
    union_all,
)

from ..encoding import canonical_time
from ..projection import Draft
from ..schema import EVENT_FIELDS, STATUS_FIELDS, anchor, events, jobs
from ..storage.rows import status_row
from .shards import Source


def position_query(event_columns: str, anchored: bool, where: str, window: bool = False) -> str:
    """The query of :meth:`Bulk.by_position`: ``event_columns`` (each backend reads them its
    own way) and the position, with ``anchored`` the link's ``seq`` and ``digest`` and the
    previous link's digest, for the events ``where`` selects (on ``e``), in position order.

    The previous link's digest is looked up by ``seq`` for each sealed event: joined
    instead, PostgreSQL plans to hash both anchors and sort the result on disk, at 1.4
    times the server's time. With ``window`` it comes from the row before where that row
    holds link ``seq - 1``, as it nearly always does (the sealer seals in commit order,
    which is position order but for concurrent writers), and is looked up only where not:
    on PostgreSQL that takes 0.8 times the server's time of a lookup per row; SQLite
    buffers the window's rows and takes 1.4 times as long as without it.
    """
    columns, source = f"{event_columns}, e.position", f"{events.name} e"
    if anchored:
        previous = (
            f"(SELECT previous.digest FROM {anchor.name} previous"
            " WHERE previous.seq = link.seq - 1)"
        )
        if window:
            previous = (
                "CASE WHEN lag(link.seq) OVER byposition = link.seq - 1"
                f" THEN lag(link.digest) OVER byposition ELSE {previous} END"
            )
            where += " WINDOW byposition AS (ORDER BY e.position)"
        columns += f", link.seq, link.digest, {previous}"
        source += f" LEFT JOIN {anchor.name} link ON link.position = e.position"
    return f"SELECT {columns} FROM {source}{where} ORDER BY e.position"


#: The anchor's links in seal order, each with the event at its position (NULLs if none):
#: ``(seq, position, job_id, version, digest, event's job_id, version, hash)``.
LINKS_SQL = (
    f"SELECT a.seq, a.position, a.job_id, a.version, a.digest, e.job_id, e.version, e.hash"
    f" FROM {anchor.name} a LEFT JOIN {events.name} e ON e.position = a.position ORDER BY a.seq"
)

#: One row of the stream described above: an :class:`EventRow` or a :class:`ProjectedRow`.
Row = Sequence[Any]
#: An instant as the database's own text for it (see above). Typed ``Any``: folds carry
#: moments in the :class:`~jobledger.projection.Draft` fields typed as datetimes.
Moment = Any
#: A batch of projection rows in the form an adapter's writer takes (picklable).
Batch = Any


class EventRow(NamedTuple):
    """The fields of an event row, in stream order (the first ``len(EventRow._fields)``)."""

    job_id: str
    version: int
    type: str
    process: str | None
    data: str
    recorded_at: Moment
    prev_hash: str
    hash: str


class ProjectedRow(NamedTuple):
    """A projection row as the stream holds it: numbers and instants as text."""

    job_id: str
    version: int
    type: None
    queue: str
    state: str
    attempt: str
    claimed_by: str | None
    claim_token: str | None
    enqueued_at: Moment
    claimed_at: Moment | None
    heartbeat_at: Moment | None
    finished_at: Moment | None
    updated_at: Moment
    last_error: str | None
    last_hash: str


#: Projection columns after ``job_id``, ``version`` and the ``None`` type, in stream order.
PROJECTION_TAIL = ProjectedRow._fields[3:]
#: How many columns of a row are an event's (:class:`EventRow`).
EVENT_WIDTH = len(EventRow._fields)
#: Empty columns after an event, so that it is as wide as a projection row in a UNION.
PADDING = len(ProjectedRow._fields) - EVENT_WIDTH
#: Projection columns that hold instants, and integers (streamed as text).
INSTANTS = frozenset(c.name for c in jobs.columns if c.name.endswith("_at"))
NUMBERS = frozenset(("attempt", "claim_token"))


class Bulk:
    """A backend's bulk reads and writes (see the module's docstring).

    :func:`jobledger.audit.session.adapter_for` picks the class for an engine's
    ``Backend.bulk_access``; its class methods open one on a connection or in a
    worker process.
    """

    #: One connection can stream a read while it writes (PostgreSQL's COPY cannot).
    reads_while_writing: bool = True

    @classmethod
    def through(cls, conn: Connection) -> Bulk:
        """Bulk access through ``conn``'s own transaction."""
        raise NotImplementedError

    @classmethod
    def worker_source(cls, conn: Connection) -> Source | None:
        """How worker processes reach ``conn``'s database in its snapshot; ``None``: they cannot."""
        return None

    @classmethod
    def open_worker(cls, source: Source) -> contextlib.AbstractContextManager[Bulk]:
        """In a worker: a connection to ``source`` with a read transaction, as a Bulk."""
        raise NotImplementedError

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        """Rows of jobs with ``lower < job_id <= upper`` (``None``: unbounded), in job order.

        Events, and with ``projection`` the projection rows too.
        """
        raise NotImplementedError

    def by_position(self, since: int | None, anchored: bool = False) -> Iterator[Row]:
        """Events after position ``since`` (all if ``None``) in position order, as
        ``(job_id, version, type, process, data, recorded_at, prev_hash, hash, position)``.

        ``anchored`` adds the event's anchor link: its ``seq``, ``digest`` and the
        previous link's digest (``None`` each where unsealed; the last ``None`` for link 1).
        """
        raise NotImplementedError

    def links(self) -> Iterator[Row]:
        """The anchor's links joined to their events, as :data:`LINKS_SQL` selects them
        (numbers as ints)."""
        raise NotImplementedError

    def canonical_time(self, moment: str) -> str:
        """The hashed text of a moment (``YYYY-MM-DDTHH:MM:SS.ffffffZ``).

        A moment that is no instant (only an edit behind the ledger's back makes
        one) is returned as it is, so that its event fails the hash check.
        """
        instant = parse_moment(moment)
        return moment if instant is None else canonical_time(instant)

    def encode(self, drafts: list[Draft]) -> Batch:
        """Folded jobs as a batch for :meth:`writer`."""
        raise NotImplementedError

    def writer(self) -> contextlib.AbstractContextManager[Callable[[Batch], None]]:
        """A function inserting batches into the (emptied) projection, until the block ends."""
        raise NotImplementedError


def where_clause(lower: str | None, upper: str | None) -> str:
    """``WHERE`` for a range of job ids, the bounds given as SQL (a literal, a mark)."""
    conditions = []
    if lower is not None:
        conditions.append(f"job_id > {lower}")
    if upper is not None:
        conditions.append(f"job_id <= {upper}")
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


# -- anything else SQLAlchemy speaks ------------------------------------------------------


class CoreBulk(Bulk):
    """The same stream through SQLAlchemy, every value cast to text in the database."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    @classmethod
    def through(cls, conn: Connection) -> Bulk:
        return cls(conn)

    def rows(self, lower: str | None, upper: str | None, projection: bool) -> Iterator[Row]:
        def bounded(query: Select[Any], table: Any) -> Select[Any]:
            if lower is not None:
                query = query.where(table.c.job_id > lower)
            if upper is not None:
                query = query.where(table.c.job_id <= upper)
            return query

        texts = [cast(events.c[name], Text) for name in EVENT_FIELDS[2:]]
        if not projection:
            query = select(events.c.job_id, events.c.version, *texts)
            return self._stream(bounded(query, events).order_by(events.c.job_id, events.c.version))
        padding = [literal("", Text)] * PADDING
        labelled = [c.label(f"c{n}") for n, c in enumerate([*texts, *padding], start=2)]
        event_rows = bounded(select(events.c.job_id, events.c.version, *labelled), events)
        tail = [cast(jobs.c[name], Text) for name in PROJECTION_TAIL]
        rows = bounded(select(jobs.c.job_id, jobs.c.version, cast(null(), Text), *tail), jobs)
        merged = union_all(event_rows, rows).subquery()
        return self._stream(select(merged).order_by(merged.c.job_id, merged.c.version))

    def by_position(self, since: int | None, anchored: bool = False) -> Iterator[Row]:
        texts = [cast(events.c[name], Text) for name in EVENT_FIELDS[2:]]
        query = select(events.c.job_id, events.c.version, *texts, events.c.position)
        if anchored:
            link, previous = anchor.alias("link"), anchor.alias("previous")
            query = query.add_columns(link.c.seq, link.c.digest, previous.c.digest).select_from(
                events.outerjoin(link, link.c.position == events.c.position).outerjoin(
                    previous, previous.c.seq == link.c.seq - 1
                )
            )
        if since is not None:
            query = query.where(events.c.position > since)
        return self._stream(query.order_by(events.c.position))

    def links(self) -> Iterator[Row]:
        options = {"stream_results": True, "yield_per": 10_000}
        return iter(self._conn.execute(text(LINKS_SQL), execution_options=options))

    def _stream(self, query: Select[Any]) -> Iterator[Row]:
        """Rows a batch at a time (a server-side cursor where the driver has one)."""
        options = {"stream_results": True, "yield_per": 10_000}
        return iter(self._conn.execute(query, execution_options=options))

    def encode(self, drafts: list[Draft]) -> Batch:
        return [
            {
                name: parse_moment(value) if name in INSTANTS and value is not None else value
                for name, value in zip(STATUS_FIELDS, status_row(d), strict=True)
            }
            for d in drafts
        ]

    @contextlib.contextmanager
    def writer(self) -> Iterator[Callable[[Batch], None]]:
        def write(batch: Batch) -> None:
            if batch:
                self._conn.execute(insert(jobs), batch)

        yield write


# -- moments ----------------------------------------------------------------------------------

_MOMENT = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(Z|[+-]\d\d(?::?\d\d)?)?"
)


def parse_moment(moment: str) -> datetime | None:
    """The UTC instant a moment stands for (no zone means UTC); ``None`` if it is none.

    For the rare paths (reports, other databases): Python 3.10's ``fromisoformat``
    reads neither PostgreSQL's ``+00`` nor fractions of other than 3 or 6 digits.
    """
    match = _MOMENT.fullmatch(moment.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        instant = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        instant -= offset if zone[0] == "+" else -offset
    return instant
