"""Archival: finished jobs move to a file and out of the database; verify stays exact.

What is archived: jobs in a final state (:data:`jobledger.lifecycle.TERMINAL_STATES`)
whose last event was recorded before the cutoff (database clock), whose every
event is sealed in the anchor and delivered to every catch-up projection, except
the job holding the anchor's last link (the sealer chains from it).

The steps, each safe to interrupt with SIGKILL (a rerun with the same ``to``
finishes the work, and nothing is deleted that is not in a finished file):

1. In one snapshot: choose the jobs and write their complete histories to
   ``<to>.partial-<random>`` (gzip JSON lines: a header line, then one line per
   event as ``jobledger export`` writes it, anchor link included), fsync. A
   half-written partial file is never renamed; the next run deletes it.
2. One transaction inserts the archive's record (:data:`jobledger.schema.archives`),
   chained to the previous record by its digest. Only one archive may be
   unfinished at a time; two archivers racing for the same id lose on its key.
3. The partial file is renamed to ``to`` without overwriting anything, and the
   directory fsynced.
4. The jobs named in the file are deleted in batches, each one short
   transaction that holds the record's row (archivers of one archive take
   turns) and the jobs' rows (a writer appending to one of them meanwhile makes
   it *kept*: the file's copy is then not the whole history, so the database's
   stays). A batch deletes the jobs' events, status rows and anchor links, and
   in the same transaction writes what verify needs: a *bridge* (the digest of
   the link before it) for every remaining link whose predecessor it deleted,
   and the record's count of deleted events, which must equal the links missing
   from the anchor. It also takes the jobs out of the queue statistics.

README.md, "Archival", says what this protects and what it does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import gzip
import hashlib
import json
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    not_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from .anchor import GENESIS
from .audit import session
from .audit.anchored import past_checkpoint
from .audit.archived import final_digest, record_digest
from .audit.exports import ARCHIVE_FORMAT
from .database import translated_errors
from .encoding import canonical_json, canonical_string, canonical_time
from .errors import ArchiveError
from .lifecycle import TERMINAL_STATES, State
from .schema import anchor, anchor_bridges, archives, checkpoints, events, jobs, queue_stats
from .stats import DESTINATION
from .storage import backend_for

if TYPE_CHECKING:
    from .ledger import Ledger

#: Jobs deleted per transaction.
BATCH_SIZE = 200
#: The header line's ``format``: what reads the file can tell an archive from an export.
FORMAT = ARCHIVE_FORMAT

#: ``progress(stage, done, total)``: stage is "writing" (events) or "deleting" (jobs).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One archive as the database records it (``jobledger archives`` lists them)."""

    id: int
    path: str
    cutoff: datetime
    jobs: int
    events: int
    first_seq: int | None
    last_seq: int | None
    final_digest: str
    file_sha256: str
    created_at: datetime
    prev_digest: str
    digest: str
    deleted_jobs: int
    deleted_events: int
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What one call of :func:`archive` did.

    ``record`` is ``None`` when nothing was due. ``skipped`` counts finished jobs
    before the cutoff that could not be archived yet (not sealed, not delivered
    to every projection, or holding the anchor's last link); ``kept`` counts jobs
    in the file that changed meanwhile and so stayed in the database.
    ``longest_batch`` is the longest deletion transaction, in seconds: how long
    it held its locks (on SQLite, the write lock every writer waits for).
    """

    record: ArchiveRecord | None
    resumed: bool
    deleted_jobs: int
    deleted_events: int
    kept: int
    skipped: int
    longest_batch: float = 0.0


# -- digests ----------------------------------------------------------------------------------


def file_sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# -- the public entry points ------------------------------------------------------------------


def archive(
    source: Ledger | Engine,
    finished_before: datetime,
    to: str | os.PathLike[str],
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> ArchiveResult:
    """Archive the jobs that finished before ``finished_before`` into ``to``, then delete them.

    Resumes an unfinished archive to the same ``to``. :class:`ArchiveError` (before
    anything is deleted) for a cutoff in the future or without a time zone, a file
    that exists and is no unfinished archive of this ledger, a file that cannot
    be written, or another archive that is unfinished.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if finished_before.tzinfo is None:
        raise ArchiveError("the cutoff needs a time zone (e.g. 2026-01-01T00:00:00Z)")
    engine = source if isinstance(source, Engine) else source.engine
    path = os.path.abspath(os.fspath(to))
    archiver = _Archiver(engine, path, batch_size, progress)
    return archiver.run(finished_before)


def list_archives(source: Ledger | Engine) -> list[ArchiveRecord]:
    """Every archive record, oldest first."""
    engine = source if isinstance(source, Engine) else source.engine
    with translated_errors(engine), engine.connect() as conn:
        return [ArchiveRecord(**row._mapping) for row in conn.execute(_RECORDS)]


_RECORDS = select(archives).order_by(archives.c.id)


# -- the run ----------------------------------------------------------------------------------


class _Archiver:
    def __init__(self, engine: Engine, path: str, batch_size: int, progress: Progress | None):
        self.engine, self.path, self.batch_size = engine, path, batch_size
        self.progress = progress
        self.backend = backend_for(engine)
        self.writer = engine.execution_options(jobledger_write=True)  # SQLite: BEGIN IMMEDIATE

    def run(self, cutoff: datetime) -> ArchiveResult:
        unfinished = self._unfinished()
        if unfinished is not None:
            if unfinished.path != self.path:
                raise ArchiveError(
                    f"archive {unfinished.id} to {unfinished.path} is unfinished: run "
                    f"`jobledger archive --to {unfinished.path}` again to finish it first"
                )
            return self._resume(unfinished)
        done = self._finished_to_this_file()
        if done is not None:  # e.g. killed after its last batch committed: nothing left to do
            return ArchiveResult(done, True, 0, 0, 0, 0)
        if os.path.lexists(self.path):
            raise ArchiveError(
                f"{self.path} exists and is no unfinished archive of this ledger; "
                "archive to a new file"
            )
        self._check_cutoff(cutoff)
        _discard_stale_partials(self.path)
        partial, summary = self._write(cutoff)
        if partial is None:
            return ArchiveResult(None, False, 0, 0, 0, summary.skipped)
        try:
            record = self._record(cutoff, summary)
        except BaseException:
            os.unlink(partial)
            raise
        _publish(partial, self.path)
        deleted = self._delete(record, summary.finals)
        return ArchiveResult(
            self._reload(record.id), False, *deleted[:3], summary.skipped, deleted[3]
        )

    # -- 1. the file --

    def _check_cutoff(self, cutoff: datetime) -> None:
        with translated_errors(self.engine), self.engine.connect() as conn:
            now = conn.execute(select(self.backend.clock())).scalar_one()
        now = _aware(now)
        if cutoff > now:
            raise ArchiveError(
                f"the cutoff {canonical_time(cutoff)} is in the future "
                f"(the database's clock says {canonical_time(now)})"
            )

    def _write(self, cutoff: datetime) -> tuple[str | None, _Summary]:
        """Write the chosen jobs' histories to a partial file (``None`` if none is due)."""
        partial = f"{self.path}.partial-{secrets.token_hex(4)}"
        try:
            raw = open(partial, "xb")  # noqa: SIM115 (closed below, after the fsync)
        except OSError as exc:
            raise ArchiveError(f"cannot write {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(raw, fcntl.LOCK_EX)  # marks it live: no other run discards it
            summary = self._fill(raw, cutoff)
            raw.flush()
            os.fsync(raw.fileno())
        except BaseException:
            raw.close()
            os.unlink(partial)
            raise
        raw.close()
        if summary.jobs == 0:
            os.unlink(partial)
            return None, summary
        summary.sha256 = file_sha256(partial)
        return partial, summary

    def _fill(self, raw: IO[bytes], cutoff: datetime) -> _Summary:
        with session.snapshot(self.engine) as conn:
            latest = conn.execute(select(func.max(archives.c.id))).scalar()
            chosen = _chosen(conn, cutoff)
            count, total = conn.execute(
                select(func.count(), func.coalesce(func.sum(chosen.c.version), 0))
            ).one()
            due = conn.execute(select(func.count()).select_from(_finished_before(cutoff))).scalar()
            summary = _Summary(cutoff, int(count), int(total), skipped=int(due or 0) - count)
            summary.after = latest
            if count == 0:
                return summary
            header = {"cutoff": canonical_time(cutoff), "events": summary.events}
            header |= {"format": FORMAT, "jobs": summary.jobs}
            with gzip.GzipFile("", "wb", 6, raw, mtime=0) as out:
                out.write((canonical_json({"archive": header}) + "\n").encode())
                for written, line in enumerate(_lines(conn, chosen, summary), start=1):
                    out.write(line.encode("utf-8", "surrogatepass"))
                    if self.progress is not None and written % 10_000 == 0:
                        self.progress("writing", written, summary.events)
        if self.progress is not None:
            self.progress("writing", summary.events, summary.events)
        return summary

    # -- 2. the record --

    def _record(self, cutoff: datetime, summary: _Summary) -> ArchiveRecord:
        with translated_errors(self.engine):
            try:
                with self.writer.begin() as conn:
                    last = conn.execute(_RECORDS.order_by(None).order_by(archives.c.id.desc()))
                    previous = last.first()
                    if (None if previous is None else previous.id) != summary.after:
                        raise ArchiveError(
                            "another archive was recorded while this one was written (its "
                            "jobs may be among this file's); run again"
                        )
                    if previous is not None and previous.finished_at is None:
                        raise ArchiveError(
                            f"archive {previous.id} to {previous.path} was started meanwhile "
                            "and is unfinished; finish it first"
                        )
                    now = conn.execute(select(self.backend.clock())).scalar_one()
                    fields: dict[str, Any] = {
                        "id": 1 if previous is None else previous.id + 1,
                        "path": self.path,
                        "cutoff": cutoff,
                        "jobs": summary.jobs,
                        "events": summary.events,
                        "first_seq": summary.first_seq,
                        "last_seq": summary.last_seq,
                        "final_digest": final_digest(
                            (job, version, hash_)
                            for job, (version, hash_) in summary.finals.items()
                        ),
                        "file_sha256": summary.sha256,
                        "created_at": _aware(now),
                    }
                    prev_digest = GENESIS if previous is None else previous.digest
                    fields |= {
                        "prev_digest": prev_digest,
                        "digest": record_digest(prev_digest, fields),
                        "deleted_jobs": 0,
                        "deleted_events": 0,
                        "finished_at": None,
                    }
                    conn.execute(insert(archives).values(**fields))
            except sa_exc.IntegrityError:
                raise ArchiveError(
                    "another archive was recorded at the same moment; run again"
                ) from None
        return ArchiveRecord(**fields)

    # -- resuming --

    def _unfinished(self) -> ArchiveRecord | None:
        query = select(archives).where(archives.c.finished_at.is_(None)).order_by(archives.c.id)
        with translated_errors(self.engine), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else ArchiveRecord(**row._mapping)

    def _resume(self, record: ArchiveRecord) -> ArchiveResult:
        if not os.path.exists(self.path):
            partial = _partial_with(self.path, record.file_sha256)
            if partial is None:
                raise ArchiveError(
                    f"archive {record.id}'s file {self.path} is gone (and no partial copy "
                    f"with its digest {record.file_sha256} is beside it): nothing more is deleted"
                )
            _publish(partial, self.path)
        finals = _finals_in(self.path, record)
        deleted = self._delete(record, finals)
        return ArchiveResult(self._reload(record.id), True, *deleted[:3], 0, deleted[3])

    def _finished_to_this_file(self) -> ArchiveRecord | None:
        """The finished archive whose file is this one (same path, same SHA-256), if any."""
        query = select(archives).where(archives.c.path == self.path).order_by(archives.c.id)
        with translated_errors(self.engine), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows or not os.path.isfile(self.path):
            return None
        sha256 = file_sha256(self.path)
        for row in rows:
            if row.file_sha256 == sha256:
                return ArchiveRecord(**row._mapping)
        return None

    def _reload(self, archive_id: int) -> ArchiveRecord:
        with translated_errors(self.engine), self.engine.connect() as conn:
            row = conn.execute(select(archives).where(archives.c.id == archive_id)).one()
        return ArchiveRecord(**row._mapping)

    # -- 4. deleting --

    def _delete(
        self, record: ArchiveRecord, finals: dict[str, tuple[int, str]]
    ) -> tuple[int, int, int, float]:
        """Delete the file's jobs in batches; (jobs, events deleted, jobs kept, longest batch)."""
        names = sorted(finals)
        deleted_jobs = deleted_events = kept = 0
        longest = 0.0
        for start in range(0, len(names), self.batch_size):
            batch = {name: finals[name] for name in names[start : start + self.batch_size]}
            last = start + self.batch_size >= len(names)
            started = time.monotonic()
            with translated_errors(self.engine), self.writer.begin() as conn:
                done = _delete_batch(conn, record.id, batch, last, self.backend.clock())
            longest = max(longest, time.monotonic() - started)
            deleted_jobs += done.jobs
            deleted_events += done.events
            kept += done.kept
            if self.progress is not None:
                self.progress("deleting", min(start + self.batch_size, len(names)), len(names))
        return deleted_jobs, deleted_events, kept, longest


@dataclass
class _Summary:
    """What the file holds, gathered while writing it."""

    cutoff: datetime
    jobs: int
    events: int
    skipped: int
    first_seq: int | None = None
    last_seq: int | None = None
    sha256: str = ""
    after: int | None = None  # the latest archive when the jobs were chosen

    def __post_init__(self) -> None:
        self.finals: dict[str, tuple[int, str]] = {}  # job -> its last version and hash


def _aware(moment: Any) -> datetime:
    """A database instant (a datetime, naive meaning UTC, or SQLite's text) as an aware one."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    result: datetime = moment
    return result


# -- choosing -----------------------------------------------------------------------------------


def _finished_before(cutoff: datetime) -> Any:
    """Jobs in a final state whose last event was recorded before ``cutoff``."""
    return (
        select(jobs.c.job_id, jobs.c.version)
        .where(jobs.c.state.in_(sorted(TERMINAL_STATES)), jobs.c.updated_at < cutoff)
        .subquery()
    )


def _chosen(conn: Connection, cutoff: datetime) -> Any:
    """The jobs to archive (see the module's docstring), as a subquery of job_id, version."""
    last_event = events.alias("last_event")
    conditions = [
        last_event.c.job_id == jobs.c.job_id,
        last_event.c.version == jobs.c.version,
        exists().where(anchor.c.position == last_event.c.position),
    ]
    for checkpoint in conn.execute(select(checkpoints.c.position, checkpoints.c.tx_id)):
        conditions.append(not_(past_checkpoint(checkpoint, last_event)))
    holder = select(anchor.c.job_id).order_by(anchor.c.seq.desc()).limit(1).scalar_subquery()
    return (
        select(jobs.c.job_id, jobs.c.version)
        .where(
            jobs.c.state.in_(sorted(TERMINAL_STATES)),
            jobs.c.updated_at < cutoff,
            jobs.c.job_id != func.coalesce(holder, ""),
            exists().where(and_(*conditions)),
        )
        .subquery("chosen")
    )


def _lines(conn: Connection, chosen: Any, summary: _Summary) -> Iterator[str]:
    """The chosen jobs' events as export lines, in position order, with their links."""
    link, previous = anchor.alias("link"), anchor.alias("previous")
    query = (
        select(
            events.c.job_id,
            events.c.version,
            events.c.type,
            events.c.process,
            events.c.data,
            events.c.recorded_at,
            events.c.prev_hash,
            events.c.hash,
            events.c.position,
            link.c.seq,
            link.c.digest,
            func.coalesce(previous.c.digest, anchor_bridges.c.prev_digest),
        )
        .select_from(
            events.join(chosen, chosen.c.job_id == events.c.job_id)
            .outerjoin(link, link.c.position == events.c.position)
            .outerjoin(previous, previous.c.seq == link.c.seq - 1)
            .outerjoin(anchor_bridges, anchor_bridges.c.seq == link.c.seq)
        )
        .order_by(events.c.position)
    )
    finals = summary.finals
    options = {"stream_results": True, "yield_per": 5_000}
    for row in conn.execute(query, execution_options=options):
        job_id, version, kind, process, data, moment, prev_hash, hash_, position = row[:9]
        seq, digest, before = row[9:]
        if seq is None:  # chosen for a sealed last event: an earlier one unsealed is tampering
            raise ArchiveError(
                f"job {job_id!r} version {version} is not sealed though its last event is; "
                "run `jobledger verify`. Nothing was archived"
            )
        if seq > 1 and before is None:
            raise ArchiveError(
                f"anchor link {seq - 1} is gone without a bridge; run `jobledger verify`. "
                "Nothing was archived"
            )
        summary.first_seq = seq if summary.first_seq is None else min(summary.first_seq, seq)
        summary.last_seq = seq if summary.last_seq is None else max(summary.last_seq, seq)
        finals[job_id] = (version, hash_)
        # The keys in sorted order, as canonical_json writes an object (and export a line).
        yield (
            f'{{"anchor":{{"digest":"{digest}","prev":"{before or GENESIS}","seq":{seq}}},'
            f'"data":{canonical_json(data)},"hash":{canonical_string(hash_)},'
            f'"job_id":{canonical_string(job_id)},"position":{position},'
            f'"prev_hash":{canonical_string(prev_hash)},'
            f'"process":{"null" if process is None else canonical_string(process)},'
            f'"recorded_at":"{canonical_time(_aware(moment))}","type":{canonical_string(kind)},'
            f'"version":{version}}}\n'
        )


# -- the file on disk ---------------------------------------------------------------------------


def _publish(partial: str, path: str) -> None:
    """Give ``partial`` its final name without overwriting anything; fsync the directory."""
    try:
        os.link(partial, path)  # fails if ``path`` exists: never clobber another file
    except FileExistsError:
        if file_sha256(path) != file_sha256(partial):
            raise ArchiveError(f"{path} appeared meanwhile; it is not this archive") from None
    os.unlink(partial)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _partials(path: str) -> list[str]:
    return glob.glob(glob.escape(path) + ".partial-*")


def _discard_stale_partials(path: str) -> None:
    """Delete partial files that no live archiver holds (a killed run's)."""
    for partial in _partials(path):
        with contextlib.suppress(OSError), open(partial, "rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another archiver is writing it
            os.unlink(partial)


def _partial_with(path: str, sha256: str) -> str | None:
    for partial in _partials(path):
        if file_sha256(partial) == sha256:
            return partial
    return None


def _finals_in(path: str, record: ArchiveRecord) -> dict[str, tuple[int, str]]:
    """Each job's last version and hash, read from the archive file (checked against its record)."""
    if file_sha256(path) != record.file_sha256:
        raise ArchiveError(
            f"{path} is not archive {record.id}'s file (its SHA-256 differs from the "
            "record's): nothing more is deleted"
        )
    finals: dict[str, tuple[int, str]] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as lines:
        next(lines)  # the header
        for line in lines:
            event = json.loads(line)
            finals[event["job_id"]] = (event["version"], event["hash"])
    return finals


# -- one batch ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Deleted:
    jobs: int
    events: int
    kept: int


def _among(conn: Connection, column: Any, values: list[Any]) -> Any:
    """``column IN values``, the values bound as one parameter (an array, or JSON on SQLite).

    A batch's lists run to thousands of values: as placeholders, SQLite refuses
    more than 32,766, and psycopg converts each new length of statement anew,
    which costs more than the statement itself.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY  # noqa: PLC0415

        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    if conn.dialect.name == "sqlite":
        listed = func.json_each(bindparam(None, json.dumps(values), type_=Text)).table_valued(
            "value"
        )
        return column.in_(select(listed.c.value))
    return column.in_(values)


def _delete_batch(
    conn: Connection,
    archive_id: int,
    batch: dict[str, tuple[int, str]],
    last: bool,
    clock: Any,
) -> _Deleted:
    """Delete the jobs of ``batch`` that are still as the file has them (one transaction)."""
    conn.execute(select(archives.c.id).where(archives.c.id == archive_id).with_for_update())
    rows = conn.execute(
        select(jobs.c.job_id, jobs.c.version, jobs.c.last_hash, jobs.c.queue, jobs.c.state)
        .where(_among(conn, jobs.c.job_id, list(batch)))
        .with_for_update()
    ).all()
    # A job gone already was deleted by an earlier run; one that changed stays.
    same = {row.job_id: row for row in rows if (row.version, row.last_hash) == batch[row.job_id]}
    kept = len(rows) - len(same)
    history = _histories(conn, list(same))
    for job_id in list(same):
        found = history.get(job_id, [])
        if len(found) != same[job_id].version or any(seq is None for *_, seq, _ in found):
            del same[job_id]  # not whole or not all sealed: only tampering does that; keep it
            kept += 1
    links = {seq: digest for job in same for *_, seq, digest in history[job]}
    if links:
        _bridge(conn, archive_id, links)
        seqs, ids = list(links), list(same)
        conn.execute(delete(anchor_bridges).where(_among(conn, anchor_bridges.c.seq, seqs)))
        conn.execute(delete(anchor).where(_among(conn, anchor.c.seq, seqs)))
        conn.execute(delete(events).where(_among(conn, events.c.job_id, ids)))
        conn.execute(delete(jobs).where(_among(conn, jobs.c.job_id, ids)))
        _uncount(conn, [(same[job].queue, same[job].state, history[job]) for job in same])
    values: dict[str, Any] = {
        "deleted_jobs": archives.c.deleted_jobs + len(same),
        "deleted_events": archives.c.deleted_events + len(links),
    }
    if last:
        values["finished_at"] = clock
    conn.execute(update(archives).where(archives.c.id == archive_id).values(**values))
    return _Deleted(len(same), len(links), kept)


def _histories(conn: Connection, job_ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Each job's events as (type, recorded_at, seq, digest), in version order."""
    if not job_ids:
        return {}
    query = (
        select(events.c.job_id, events.c.type, events.c.recorded_at, anchor.c.seq, anchor.c.digest)
        .select_from(events.outerjoin(anchor, anchor.c.position == events.c.position))
        .where(_among(conn, events.c.job_id, job_ids))
        .order_by(events.c.job_id, events.c.version)
    )
    found: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for job_id, kind, moment, seq, digest in conn.execute(query):
        found[job_id].append((kind, moment, seq, digest))
    return found


def _bridge(conn: Connection, archive_id: int, links: dict[int, str]) -> None:
    """Bridge every remaining link whose predecessor is among ``links`` (being deleted).

    A link after a gap that was there before keeps its bridge: its predecessor
    was deleted earlier. The anchor's last link is never deleted (its job is
    never chosen), so every deleted link has a successor.
    """
    after = [seq + 1 for seq in links if seq + 1 not in links]
    remaining = (
        conn.execute(select(anchor.c.seq).where(_among(conn, anchor.c.seq, after))).scalars().all()
    )
    if remaining:
        conn.execute(
            insert(anchor_bridges),
            [
                {"seq": seq, "prev_digest": links[seq - 1], "archive_id": archive_id}
                for seq in remaining
            ],
        )


def _uncount(conn: Connection, finished: list[tuple[str, str, list[tuple[Any, ...]]]]) -> None:
    """Take deleted jobs out of the queue statistics, as if they had never been.

    A job counts once in its final state, and each of its runs (a claim, until
    the event that ended it) in the state that ended it; these are subtracted.
    ``max_run_seconds`` cannot be: it stays the maximum ever seen.
    """
    change: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for queue, state, history in finished:
        change[(queue, state)][0] += 1
        since, before = None, None
        for kind, moment, _, _ in history:
            after = DESTINATION.get(kind)
            if after is None:
                continue
            if before == State.CLAIMED.value and since is not None:
                counts = change[(queue, after)]
                counts[1] += 1
                counts[2] += (_aware(moment) - _aware(since)).total_seconds()
            before, since = after, moment
    for (queue, state), (count, runs, seconds) in change.items():
        conn.execute(
            update(queue_stats)
            .where(queue_stats.c.queue == queue, queue_stats.c.state == state)
            .values(
                jobs=queue_stats.c.jobs - count,
                runs=queue_stats.c.runs - runs,
                run_seconds=queue_stats.c.run_seconds - seconds,
            )
        )
