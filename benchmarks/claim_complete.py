"""claim+complete: the Ledger against the raw driver running the same SQL, and the limit.

One operation is ``complete(claim(job))``: two commands. The ledger side claims from
the row the job's message would carry (as the RQ and Celery integrations do; read
before the timing, as the publisher wrote it), so the claim and the holder's complete
are one guarded write each, no read: the claim guarded by the whole row and the clock,
the complete by the claim's version, last hash and the clock. On PostgreSQL each is one
statement; on SQLite a guarded UPDATE and the event's INSERT in ``BEGIN IMMEDIATE``. The
"same SQL" baseline sends exactly the statements the ledger sends (their text is
taken from ``Store.command_statements()``), with the same round trips and commits,
straight through psycopg or sqlite3, skipping everything the ledger adds in Python:
validation, fencing, the hash chain's canonical JSON, the projection fold, error
mapping. The "limit" baseline sends one data-modifying CTE per command that reads
what it needs in SQL (:class:`LimitPostgres`). Every side pays the same fsync per
commit.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from common import (
    Paired,
    Row,
    Settings,
    interleaved,
    libpq_url,
    postgres_database,
    sqlite_database,
)

from jobledger import Ledger
from jobledger.records import JobStatus
from jobledger.schema import STATUS_FIELDS
from jobledger.store import Store

PROCESS = "bench-host:4242:0123456789abcdef"
WARM_UP = 20


def run(settings: Settings) -> list[Row]:
    return [
        postgres_one_process(settings),
        postgres_processes(settings, 4),
        sqlite(settings),
        postgres_one_process(settings, limit=True),
        postgres_processes(settings, 4, limit=True),
        sqlite(settings, limit=True),
    ]


# -- the two sides --------------------------------------------------------------------


class LedgerSide:
    """claim+complete through the Ledger, claiming from the row the job's message carried
    (as the RQ and Celery integrations do: ``jobledger.handoff``)."""

    def __init__(self, url: str, sql: object = None) -> None:
        self.ledger = Ledger(url)
        self.seen: dict[str, JobStatus] = {}

    def prepare(self, job_ids: Sequence[str]) -> None:
        """Read the rows the messages would carry (not timed: the publisher wrote them)."""
        self.seen.update((job_id, self.ledger.status(job_id)) for job_id in job_ids)

    def run(self, job_ids: Sequence[str]) -> None:
        ledger, seen = self.ledger, self.seen
        for job_id in job_ids:
            ledger.complete(ledger.claim(job_id, PROCESS, seen=seen.pop(job_id)))

    def close(self) -> None:
        self.ledger.close()


def fake_hash(prev_hash: str, job_id: str, version: int) -> str:
    """A SHA-256 the baseline stores where the ledger stores its chained hash."""
    return hashlib.sha256(f"{prev_hash}\n{job_id}:{version}".encode()).hexdigest()


def next_values(
    job_id: str, kind: str, row: Sequence[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The projection row and the event a baseline writes after the loaded ``row``.

    The bare minimum the ledger's statements need: no validation, no fold, no
    canonical JSON; the same columns and values a claim or a completion stores.
    """
    now, _, queue, _, version, attempt, _, _, enqueued_at, claimed_at = row[:10]
    last_hash = row[14]
    new_version = version + 1
    digest = fake_hash(last_hash, job_id, new_version)
    claiming = kind == "claimed"
    status = {
        "expected": version,
        "j_job_id": job_id,
        "j_queue": queue,
        "j_state": kind,
        "j_version": new_version,
        "j_attempt": attempt + 1 if claiming else attempt,
        "j_claimed_by": PROCESS if claiming else None,
        "j_claim_token": new_version if claiming else None,
        "j_enqueued_at": enqueued_at,
        "j_claimed_at": now if claiming else claimed_at,
        "j_heartbeat_at": None,
        "j_finished_at": None if claiming else now,
        "j_updated_at": now,
        "j_last_error": None,
        "j_last_hash": digest,
    }
    event = {
        "version": new_version,
        "type": kind,
        "process": PROCESS,
        "data": {"attempt": attempt + 1} if claiming else {"result": None},
        "recorded_at": now,
        "prev_hash": last_hash,
        "hash": digest,
    }
    return status, event


class RawPostgres:
    """claim+complete by hand: psycopg, autocommit, the ledger's two statements."""

    def __init__(self, url: str, sql: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        import psycopg

        self.connection = psycopg.connect(libpq_url(url), autocommit=True)
        self.load_sql, _ = sql["load"]
        self.unread_sql, self.unread_names = sql["pg_append_unread"]
        self.held_sql, self.held_names = sql["pg_append_held"]

    def prepare(self, job_ids: Sequence[str]) -> None:
        """Read the rows the messages would carry, as the ledger side does (not timed)."""
        self.seen = {}
        for job_id in job_ids:
            (self.seen[job_id],) = self.connection.execute(self.load_sql, [job_id]).fetchall()

    def run(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            # The claim goes out unread, guarded by the row the message carried ...
            row = [datetime.now(timezone.utc), *self.seen.pop(job_id)[1:]]
            status, event = next_values(job_id, "claimed", row)
            self.write(self.unread_sql, self.unread_names, job_id, status, event, known(row[1:]))
            # ... and the holder's complete by the version and last hash the claim wrote.
            claimed = [datetime.now(timezone.utc), *written(status)]
            status, event = next_values(job_id, "completed", claimed)
            guard = {"k_last_hash": claimed[14]}
            self.write(self.held_sql, self.held_names, job_id, status, event, guard)

    def write(
        self,
        sql: str,
        names: Sequence[str],
        job_id: str,
        status: dict[str, Any],
        event: dict[str, Any],
        guard: dict[str, Any],
    ) -> None:
        kind = status["j_state"]
        params = {
            **status,
            **guard,
            "e_version": event["version"],
            "e_type": kind,
            "e_process": PROCESS,
            "e_data": json.dumps(event["data"]),  # as the ledger: text, cast by the SQL
            "e_recorded_at": event["recorded_at"],
            "e_prev_hash": event["prev_hash"],
            "e_hash": event["hash"],
        }
        values = [params[name] for name in names]  # the statement's bind order
        if not self.connection.execute(sql, values).fetchall():
            raise RuntimeError(f"baseline lost a race on {job_id}")

    def close(self) -> None:
        self.connection.close()


def known(columns: Sequence[Any]) -> dict[str, Any]:
    """The unread write's guard: the row (status columns in order) it decided on."""
    return {"k_" + name: value for name, value in zip(STATUS_FIELDS, columns, strict=True)}


def written(status: dict[str, Any]) -> list[Any]:
    """The status columns a write's values set, in order."""
    return [status["j_" + name] for name in STATUS_FIELDS]


class LimitPostgres:
    """The limit for this work (issue 13): ONE data-modifying CTE per command, autocommit.

    Each command is guarded by the job's current state (and the claim's token), moves
    the projection row to version + 1 and inserts the event chained to the row's last
    hash, all in one statement and one round trip. Its hashes are random (right
    length, no canonical JSON), its event data minimal: nothing a ledger could skip.
    """

    # ``old`` is MATERIALIZED so that the planner looks the row up by its key alone. Inlined,
    # the state test ends up on the (state, queue) index, which the statistics taken right
    # after enqueueing say holds no claimed job: the complete then walks every dead
    # "claimed" entry left by earlier claims (~0.7 ms of server CPU per command, measured).
    # ``jobs.version = old.version`` keeps a concurrent writer out (READ COMMITTED rechecks it).
    CLAIM = """
WITH old AS MATERIALIZED (
    SELECT job_id, version, state, last_hash FROM jobledger_jobs WHERE job_id = %(j)s),
moved AS (
    UPDATE jobledger_jobs AS jobs SET state = 'claimed', version = jobs.version + 1,
        attempt = jobs.attempt + 1, claimed_by = %(p)s, claim_token = jobs.version + 1,
        claimed_at = now(), heartbeat_at = NULL, updated_at = now(), last_hash = %(h)s
    FROM old WHERE jobs.job_id = old.job_id AND jobs.version = old.version
        AND old.state = 'enqueued'
    RETURNING jobs.job_id, jobs.version, jobs.attempt, old.last_hash AS prev)
INSERT INTO jobledger_events (job_id, version, type, process, data, recorded_at, prev_hash,
    hash, tx_id)
SELECT job_id, version, 'claimed', %(p)s, jsonb_build_object('attempt', attempt), now(), prev,
    %(h)s, pg_current_xact_id() FROM moved
RETURNING version"""

    COMPLETE = """
WITH old AS MATERIALIZED (
    SELECT job_id, version, state, claim_token, last_hash FROM jobledger_jobs
    WHERE job_id = %(j)s),
moved AS (
    UPDATE jobledger_jobs AS jobs SET state = 'completed', version = jobs.version + 1,
        claimed_by = NULL, claim_token = NULL, finished_at = now(), updated_at = now(),
        last_hash = %(h)s
    FROM old WHERE jobs.job_id = old.job_id AND jobs.version = old.version
        AND old.state = 'claimed' AND old.claim_token = %(t)s
    RETURNING jobs.job_id, jobs.version, old.last_hash AS prev)
INSERT INTO jobledger_events (job_id, version, type, process, data, recorded_at, prev_hash,
    hash, tx_id)
SELECT job_id, version, 'completed', %(p)s, '{"result": null}'::jsonb, now(), prev, %(h)s,
    pg_current_xact_id() FROM moved
RETURNING version"""

    def __init__(self, url: str, sql: object = None) -> None:
        import psycopg

        self.connection = psycopg.connect(libpq_url(url), autocommit=True)
        self.tokens: dict[str, int] = {}

    def prepare(self, job_ids: Sequence[str]) -> None:
        """Nothing to read ahead: each command reads what it needs."""

    def run(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self.claim(job_id)
            self.complete(job_id)

    def claim(self, job_id: str) -> None:
        values = {"j": job_id, "p": PROCESS, "h": os.urandom(32).hex()}
        (token,) = self.connection.execute(self.CLAIM, values).fetchone() or (None,)
        if token is None:
            raise RuntimeError(f"limit baseline could not claim {job_id}")
        self.tokens[job_id] = token

    def complete(self, job_id: str) -> None:
        token = self.tokens.pop(job_id)
        values = {"j": job_id, "p": PROCESS, "h": os.urandom(32).hex(), "t": token}
        if self.connection.execute(self.COMPLETE, values).fetchone() is None:
            raise RuntimeError(f"limit baseline could not complete {job_id}")

    def close(self) -> None:
        self.connection.close()


#: The raw sides a benchmark process can run, by name (processes are spawned: no classes).
RAW_SIDES: dict[str, type[Any]] = {"same": RawPostgres, "limit": LimitPostgres}


class RawSqlite:
    """claim+complete by hand: sqlite3 with the ledger's pragmas and statements (each
    command a guarded UPDATE and the event's INSERT in ``BEGIN IMMEDIATE``, no read: the
    claim guarded by the row the message carried, the complete by the claim's version
    and last hash)."""

    def __init__(self, url: str, sql: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self.connection = _sqlite_connection(url)
        self.sql = sql
        self.clock = {"strftime_1": "%Y-%m-%d %H:%M:%f", "strftime_2": "now"}

    def statement(self, name: str, values: dict[str, Any]) -> Any:
        text, names = self.sql[name]
        return self.connection.execute(text, tuple(values[n] for n in names))

    def prepare(self, job_ids: Sequence[str]) -> None:
        """Read the rows the messages would carry, as the ledger side does (not timed)."""
        self.seen = {}
        for job_id in job_ids:
            load = self.statement("load", {**self.clock, "job_id": job_id})
            (self.seen[job_id],) = load.fetchall()

    def run(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            row = [_sqlite_now(), *self.seen.pop(job_id)[1:]]
            status, event = next_values(job_id, "claimed", row)
            self.command("sqlite_update_seen", job_id, status, event, known(row[1:]))
            claimed = [_sqlite_now(), *written(status)]
            status, event = next_values(job_id, "completed", claimed)
            self.command("sqlite_update_held", job_id, status, event, {"k_last_hash": claimed[14]})

    def command(
        self,
        update: str,
        job_id: str,
        status: dict[str, Any],
        event: dict[str, Any],
        guard: dict[str, Any],
    ) -> None:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            values = {**status, **guard, "e_recorded_at": event["recorded_at"]}
            if self.statement(update, values).rowcount != 1:
                raise RuntimeError(f"baseline lost a race on {job_id}")
            event.update(job_id=job_id, data=json.dumps(event["data"]), tx_id=None)
            if self.statement("sqlite_insert_seen", event).lastrowid is None:
                raise RuntimeError(f"baseline inserted no event for {job_id}")
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.connection.close()


def _sqlite_now() -> str:
    """This process's clock as SQLite stores a moment (the ledger stamps its unread writes
    so too, corrected by the offset it measured)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


class LimitSqlite:
    """The limit on SQLite: one short transaction per command, nothing read by the client.

    SQLite has no data-modifying CTE, so the fewest statements a command can be is two in
    one ``BEGIN IMMEDIATE`` transaction: the event is inserted from the job's row (guarded
    by its state and the claim's token, chained to its last hash, stamped with SQLite's
    clock), then the row is moved to version + 1. Same connection settings as the ledger's
    (WAL, the busy timeout, SQLite's default ``synchronous=FULL``), so the same fsync per
    commit. Random hashes, minimal data, as :class:`LimitPostgres`.
    """

    NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    CLAIM_EVENT = f"""
INSERT INTO jobledger_events (job_id, version, type, process, data, recorded_at, prev_hash,
    hash, tx_id)
SELECT job_id, version + 1, 'claimed', ?, json_object('attempt', attempt + 1), {NOW},
    last_hash, ?, NULL
FROM jobledger_jobs WHERE job_id = ? AND state = 'enqueued'"""
    CLAIM_ROW = f"""
UPDATE jobledger_jobs SET state = 'claimed', version = version + 1, attempt = attempt + 1,
    claimed_by = ?, claim_token = version + 1, claimed_at = {NOW}, heartbeat_at = NULL,
    updated_at = {NOW}, last_hash = ?
WHERE job_id = ? RETURNING claim_token"""
    COMPLETE_EVENT = f"""
INSERT INTO jobledger_events (job_id, version, type, process, data, recorded_at, prev_hash,
    hash, tx_id)
SELECT job_id, version + 1, 'completed', ?, '{{"result":null}}', {NOW}, last_hash, ?, NULL
FROM jobledger_jobs WHERE job_id = ? AND state = 'claimed' AND claim_token = ?"""
    COMPLETE_ROW = f"""
UPDATE jobledger_jobs SET state = 'completed', version = version + 1, claimed_by = NULL,
    claim_token = NULL, finished_at = {NOW}, updated_at = {NOW}, last_hash = ?
WHERE job_id = ?"""

    def __init__(self, url: str, sql: object = None) -> None:
        self.connection = _sqlite_connection(url)
        self.tokens: dict[str, int] = {}

    def prepare(self, job_ids: Sequence[str]) -> None:
        """Nothing to read ahead: each command reads what it needs."""

    def run(self, job_ids: Sequence[str]) -> None:
        execute = self.connection.execute
        for job_id in job_ids:
            digest = os.urandom(32).hex()
            execute("BEGIN IMMEDIATE")
            try:
                if execute(self.CLAIM_EVENT, (PROCESS, digest, job_id)).rowcount != 1:
                    raise RuntimeError(f"limit baseline could not claim {job_id}")
                ((token,),) = execute(self.CLAIM_ROW, (PROCESS, digest, job_id)).fetchall()
                execute("COMMIT")
            except BaseException:
                execute("ROLLBACK")
                raise
            digest = os.urandom(32).hex()
            execute("BEGIN IMMEDIATE")
            try:
                values = (PROCESS, digest, job_id, token)
                if execute(self.COMPLETE_EVENT, values).rowcount != 1:
                    raise RuntimeError(f"limit baseline could not complete {job_id}")
                execute(self.COMPLETE_ROW, (digest, job_id))
                execute("COMMIT")
            except BaseException:
                execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.connection.close()


def _sqlite_connection(url: str) -> sqlite3.Connection:
    """A connection set up as the ledger's are: no implicit transactions, its pragmas."""
    from jobledger.database import SQLITE_BUSY_TIMEOUT
    from jobledger.storage.sqlite import SESSION_PRAGMAS

    path = url.removeprefix("sqlite:///")
    connection = sqlite3.connect(
        path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    for pragma in SESSION_PRAGMAS:
        connection.execute(pragma)
    return connection


def command_sql(url: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The text and bind order of every statement a command sends, from the ledger itself."""
    with Ledger(url) as ledger:
        store = Store(ledger.engine)
        return {name: (s.sql, s.names) for name, s in store.command_statements().items()}


def enqueue(url: str, job_ids: Sequence[str]) -> None:
    """Enqueue ``job_ids``, then settle the tables before anything is timed.

    Without the explicit VACUUM ANALYZE, autovacuum wakes up on the freshly
    filled tables during the first timed blocks and slows whichever side runs
    then (it made the four-process ratio swing from 0.7 to 1.0 with the order).
    """
    with Ledger(url) as ledger:
        ledger.enqueue_many(job_ids)
        if ledger.engine.dialect.name == "postgresql":
            with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE jobledger_jobs, jobledger_events")


def ids(side: str, round_number: int, count: int) -> list[str]:
    return [f"{side}-{round_number}-{i}" for i in range(count)]


# -- one process ----------------------------------------------------------------------


def one_process(settings: Settings, url: str, raw_class: type[Any]) -> Paired:
    blocks, per_block = settings.pick(40, 100), settings.pick(25, 40)
    ours_ids = [ids("o", b, per_block) for b in range(blocks)]
    raw_ids = [ids("b", b, per_block) for b in range(blocks)]
    warm_ids = ids("warm-o", 0, WARM_UP) + ids("warm-b", 0, WARM_UP)
    enqueue(url, [j for chunk in ours_ids + raw_ids for j in chunk] + warm_ids)
    raw, ours = raw_class(url, command_sql(url)), LedgerSide(url)
    ours.prepare([j for chunk in ours_ids for j in chunk] + warm_ids[:WARM_UP])
    raw.prepare([j for chunk in raw_ids for j in chunk] + warm_ids[WARM_UP:])
    ours.run(warm_ids[:WARM_UP])
    raw.run(warm_ids[WARM_UP:])
    paired = interleaved(
        blocks, per_block, lambda b: ours.run(ours_ids[b]), lambda b: raw.run(raw_ids[b])
    )
    ours.close()
    raw.close()
    return paired


def row(name: str, baseline_name: str, paired: Paired, target: float) -> Row:
    return Row(
        name,
        paired.ours,
        paired.baseline,
        "ops/s",
        baseline_name,
        f"≥ {target}x",
        met=paired.ratio >= target,
        note=paired.note(),
        paired_ratio=paired.ratio,
    )


def postgres_one_process(settings: Settings, limit: bool = False) -> Row:
    with postgres_database() as url:
        paired = one_process(settings, url, LimitPostgres if limit else RawPostgres)
    name = "claim+complete, 1 process, PostgreSQL"
    if limit:
        return row(f"{name}, against the limit", LIMIT_BASELINE, paired, 0.8)
    return row(name, "raw psycopg, same SQL", paired, 0.8)


LIMIT_BASELINE = "raw psycopg, one CTE per command, autocommit"


def sqlite(settings: Settings, limit: bool = False) -> Row:
    with sqlite_database() as url:
        paired = one_process(settings, url, LimitSqlite if limit else RawSqlite)
    name = "claim+complete, 1 process, SQLite (WAL)"
    if limit:
        baseline = "raw sqlite3, one BEGIN IMMEDIATE transaction of two statements per command"
        return row(f"{name}, against the limit", baseline, paired, 0.8)
    return row(name, "raw sqlite3, same pragmas and SQL", paired, 0.5)


# -- several processes ----------------------------------------------------------------

SIDES = ("ours", "raw")
BARRIER_TIMEOUT = 300.0


def _process_main(
    side: str,
    url: str,
    sql: dict[str, tuple[str, tuple[str, ...]]],
    number: int,
    blocks: int,
    per_block: int,
    barriers: dict[str, Any],
    raw_side: str,
) -> None:
    """One benchmark process of one side: warm up, then run a block whenever released."""
    runner = LedgerSide(url) if side == "ours" else RAW_SIDES[raw_side](url, sql)
    warm = ids(f"warm-{side}-{number}", 0, WARM_UP)
    mine = [ids(f"{side}-{number}", b, per_block) for b in range(blocks)]
    runner.prepare(warm + [j for chunk in mine for j in chunk])
    runner.run(warm)
    barriers["ready"].wait(BARRIER_TIMEOUT)
    for block in range(blocks):
        barriers[f"{side}-start"].wait(BARRIER_TIMEOUT)
        runner.run(mine[block])
        barriers[f"{side}-done"].wait(BARRIER_TIMEOUT)
    runner.close()


def postgres_processes(settings: Settings, processes: int, limit: bool = False) -> Row:
    """``processes`` processes per side, all started up front; the sides take turns.

    In each block every process of one side completes ``per_process`` jobs while
    the other side's processes wait; the block's time runs from releasing them
    to the last one finishing.
    """
    blocks, per_process = settings.pick(12, 30), settings.pick(60, 80)
    context = multiprocessing.get_context("spawn")
    with postgres_database() as url:
        enqueue(
            url,
            [
                job_id
                for side in SIDES
                for p in range(processes)
                for job_id in ids(f"warm-{side}-{p}", 0, WARM_UP)
                + [j for b in range(blocks) for j in ids(f"{side}-{p}", b, per_process)]
            ],
        )
        sql = command_sql(url)
        raw_side = "limit" if limit else "same"
        barriers = {"ready": context.Barrier(2 * processes + 1)}
        for side in SIDES:
            barriers[f"{side}-start"] = context.Barrier(processes + 1)
            barriers[f"{side}-done"] = context.Barrier(processes + 1)
        workers = [
            context.Process(
                target=_process_main,
                args=(side, url, sql, p, blocks, per_process, barriers, raw_side),
            )
            for side in SIDES
            for p in range(processes)
        ]
        for worker in workers:
            worker.start()
        barriers["ready"].wait(BARRIER_TIMEOUT)

        def turn(side: str) -> Any:
            def run(_: int) -> None:
                barriers[f"{side}-start"].wait(BARRIER_TIMEOUT)
                barriers[f"{side}-done"].wait(BARRIER_TIMEOUT)

            return run

        paired = interleaved(blocks, processes * per_process, turn("ours"), turn("raw"))
        for worker in workers:
            worker.join()
            if worker.exitcode != 0:
                raise RuntimeError(f"a benchmark process failed (exit code {worker.exitcode})")
    name = f"claim+complete, {processes} processes, PostgreSQL"
    if limit:
        return row(
            f"{name}, against the limit", f"{LIMIT_BASELINE}, {processes} processes", paired, 0.8
        )
    return row(name, f"raw psycopg, {processes} processes", paired, 0.8)
