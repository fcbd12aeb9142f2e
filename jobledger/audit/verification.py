"""verify: every history checked against its hash chain, the lifecycle and the projection.

verify reads the merged stream of events and projection rows of
:mod:`jobledger.audit.bulk`, a range of job ids at a time (all of them in one
process, or ranges in workers: :mod:`jobledger.audit.shards`), and folds each
job with :func:`jobledger.projection.advance`, the same definition every append
uses. A report keeps the first :data:`MAX_PROBLEMS` problems in job order.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from ..anchor import Head
from ..chain import BAD_HASH, GENESIS, broken_link, encoded_chain_hash
from ..encoding import canonical_string
from ..errors import CorruptHistory
from ..projection import Draft, advance
from ..schema import STATUS_FIELDS
from . import session, shards
from .bulk import EVENT_WIDTH, INSTANTS, NUMBERS, Bulk, ProjectedRow, parse_moment
from .events import StoredEvent
from .payloads import JsonStrings, StoredPayloads

#: Problems kept in a report; the rest are only counted (a wholesale forgery
#: must not turn "verify a million events" into "hold a million messages").
MAX_PROBLEMS = 1000


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the stored history or the projection."""

    job_id: str
    version: int | None  # None when no event is to blame (e.g. an unparsable export line)
    message: str

    def __str__(self) -> str:
        where = f"job {self.job_id!r}"
        if self.version is not None:
            where += f" version {self.version}"
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``problems`` holds the first :data:`MAX_PROBLEMS`.

    ``sealed`` counts the anchor's links, ``unsealed`` the events not sealed yet (the
    tail after the sealer's checkpoint), ``head`` is the anchor's last link, ``archived``
    the events archival removed (:mod:`jobledger.archive`).
    """

    jobs: int = 0
    events: int = 0
    projection_rows: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)
    sealed: int = 0
    unsealed: int = 0
    head: Head | None = None
    archived: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, job_id: str, version: int | None, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(job_id, version, message))

    def add_problems(self, other: VerifyReport) -> None:
        """``other``'s problems after these, kept up to :data:`MAX_PROBLEMS`, all counted."""
        self.problem_count += other.problem_count
        self.problems += other.problems[: MAX_PROBLEMS - len(self.problems)]


def verify(
    engine: Engine,
    progress: session.Progress | None = None,
    workers: int | None = None,
    head: Head | None = None,
) -> VerifyReport:
    """Check every history, the projection and the anchor; a report listing what is wrong.

    For each job, in ``(job_id, version)`` order: each event's hash is
    recomputed, versions run 1, 2, 3 ... without gaps, each ``prev_hash`` is the
    previous event's hash (``GENESIS`` for the first), every event is a legal
    move from the state before it, and the projection row equals the fold of
    the events. Projection rows without events are reported too.

    Problems are listed in job order, a job's events' problems before its
    projection row's. Above ``MIN_PARALLEL_EVENTS`` events the jobs are split
    by ranges of ids over ``workers`` processes (default: one per CPU, up to 8), which on
    PostgreSQL all read the snapshot of this call's transaction; the report is
    the same however the work was split.

    The ledger-wide anchor is checked in the same snapshot
    (:mod:`jobledger.audit.anchored`), and with ``head`` that its link
    ``head.seq`` still has ``head.digest``; with workers, by this process while
    they check the events. Its problems follow the events'.
    """
    from .anchored import AnchorCheck  # noqa: PLC0415 (it imports this module)

    with session.snapshot(engine) as conn:
        bulk = session.bulk_for(conn)
        total = session.count_events(conn)
        tracker = session.Tracker(progress, total)
        task = functools.partial(_verify_range, batch_size=session.BATCH_SIZE)
        plan = session.worker_plan(conn, total, workers)
        with contextlib.closing(AnchorCheck(conn, head)) as anchor:
            reports = None
            if plan is not None:
                reports = shards.run(task, *plan, tracker.handle, anchor.steps())
            if reports is None:
                reports = [task(bulk, None, None, tracker.handle)]
            report = _merged(reports)
            anchor.finish(report)
    tracker.finish()
    return report


def _verify_range(
    bulk: Bulk, lower: str | None, upper: str | None, emit: shards.Emit, *, batch_size: int
) -> VerifyReport:
    """Verify the jobs with ``lower < job_id <= upper`` (see :func:`verify`).

    One loop over the merged stream of events and projection rows, the job's
    state in local variables: this runs once per event.
    """
    report = VerifyReport()
    add = report.add
    encoded = StoredPayloads().encoded
    canonical = bulk.canonical_time
    strings = JsonStrings()  # event types and processes
    job_id: Any = None  # the job being checked (None before the first row)
    job_json = ""
    draft: Draft | None = None
    projected: ProjectedRow | None = None
    broken = False
    expected_version, expected_prev = 1, GENESIS
    events = first = ticked = 0  # events so far; at the job's start; at the last progress
    for row in bulk.rows(lower, upper, projection=True):
        row_job, version, kind, process, data, moment, prev_hash, stored_hash = row[:EVENT_WIDTH]
        if row_job != job_id:
            if job_id is not None:
                _finish_job(report, job_id, events - first, None if broken else draft, projected)
            job_id, job_json, draft, projected = row_job, canonical_string(row_job), None, None
            broken, expected_version, expected_prev, first = False, 1, GENESIS, events
            if events - ticked >= batch_size:
                emit("progress", events - ticked)
                ticked = events
        if kind is None:  # the job's projection row, compared once its events are folded
            projected = ProjectedRow._make(row)
            report.projection_rows += 1
            continue
        events += 1
        data_json, value = encoded(data)
        recomputed = encoded_chain_hash(
            prev_hash,
            job_json,
            version,
            strings[kind],
            "null" if process is None else strings[process],
            data_json,
            canonical(moment),
        )
        if recomputed != stored_hash:
            add(job_id, version, BAD_HASH)
        if version != expected_version or prev_hash != expected_prev:
            add(job_id, version, broken_link(expected_version, expected_prev, version, prev_hash))
            broken = True
        expected_version, expected_prev = version + 1, stored_hash
        if broken:
            continue
        event = tuple.__new__(
            StoredEvent,
            (None, job_id, version, kind, process, value, moment, prev_hash, stored_hash),
        )
        try:
            draft = advance(draft, event)
        except CorruptHistory as exc:
            add(job_id, version, exc.reason)
            broken = True
    if job_id is not None:
        _finish_job(report, job_id, events - first, None if broken else draft, projected)
    report.events = events
    emit("progress", events - ticked)
    return report


def _finish_job(
    report: VerifyReport,
    job_id: str,
    events: int,
    folded: Draft | None,
    projected: ProjectedRow | None,
) -> None:
    """Compare a job's fold (``None``: its history is broken) with its projection row."""
    if events == 0:
        assert projected is not None  # a job without events only shows as a projection row
        report.add(job_id, projected.version, "projection row has no events")
        return
    report.jobs += 1
    if projected is None:
        version = folded.version if folded is not None else None
        report.add(job_id, version, "job has events but no projection row")
    elif folded is not None and projected != _as_projected_row(folded):
        _compare_row(projected, folded, report)


def _as_projected_row(draft: Draft) -> ProjectedRow:
    """A fold as its projection row reads in the stream: numbers as text."""
    token = draft.claim_token
    # Positional, as ProjectedRow's fields run: once per job, in verify's hot loop.
    return tuple.__new__(
        ProjectedRow,
        (
            draft.job_id,
            draft.version,
            None,  # type
            draft.queue,
            draft.state,
            str(draft.attempt),
            draft.claimed_by,
            None if token is None else str(token),
            draft.enqueued_at,
            draft.claimed_at,
            draft.heartbeat_at,
            draft.finished_at,
            draft.updated_at,
            draft.last_error,
            draft.last_hash,
        ),
    )


def _compare_row(stored: ProjectedRow, folded: Draft, report: VerifyReport) -> None:
    """Report the columns in which a projection row differs from the fold, as values.

    Texts that differ may still be one value (an instant written two ways by
    two writers, say); only values that differ are reported.
    """
    differences = []
    for name in STATUS_FIELDS:
        theirs, ours = _value(name, getattr(stored, name)), _value(name, getattr(folded, name))
        if theirs != ours:
            differences.append(f"{name} is {theirs!r}, events say {ours!r}")
    if differences:
        report.add(
            stored.job_id,
            folded.version,
            "projection row differs from the fold of its events: " + "; ".join(differences),
        )


def _value(name: str, value: Any) -> Any:
    """A projection column's value from its text in the stream."""
    if not isinstance(value, str):
        return value
    if name in NUMBERS and value.lstrip("-").isdigit():
        return int(value)
    if name in INSTANTS:
        return parse_moment(value) or value
    return value


def _merged(reports: list[VerifyReport]) -> VerifyReport:
    """One report of the shards' reports, in shard (job) order."""
    merged = VerifyReport()
    for part in reports:
        merged.jobs += part.jobs
        merged.events += part.events
        merged.projection_rows += part.projection_rows
        merged.add_problems(part)
    return merged
