"""Scale: what one PostgreSQL does with 10M events over 2M jobs (issue 15).

The ledger lives in a database of its own (``jl_scale``), filled by
``scale_data.build`` with a real history (every event hash-chained and sealed;
``jobledger verify`` passes): 2M jobs, 10M events, 1M of them claimed and in
progress over 50k holder identities, five queues. Then, each against a baseline
from the same run where the issue asks for "unchanged":

1. claim+complete through the Ledger on the 10M ledger against an empty ledger,
   1 and 4 processes, in alternating blocks (``claim_complete``'s measuring code);
2. the recovery sweep with Redis liveness: all 50k holders alive (nothing to do),
   then all lapsed (every one of the 1M claims abandoned and requeued);
3. ``jobledger verify``, ``rebuild`` and ``export`` as a user runs them;
4. the operator's reads: CLI commands and the web pages, median and p95;
5. ``jobledger archive``, if it exists (hook: :func:`archive_rates`).

Heavy: the fill takes ~15-25 minutes on 2 cores and the sweep of 1M claims far
longer, so ``benchmarks/run.py`` runs it only when asked (``--only scale``).

    python benchmarks/scale.py build [--jobs 2000000] [--holders 50000]
    python benchmarks/scale.py measure [--only claim sweep audit reads archive sizes]
    python benchmarks/scale.py drop
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import claim_complete
import scale_data
from common import (
    POSTGRES_SERVER_URL,
    Paired,
    Row,
    Settings,
    interleaved,
    libpq_url,
    percentile,
    postgres_database,
    register_alive,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from jobledger import Ledger, RecoveryProjector, RedisLiveness
from jobledger.database import parse_url
from jobledger.testing import RedisServer, free_port

#: The benchmark's own database; another name keeps a second ledger (e.g. a small trial run).
DATABASE = os.environ.get("JOBLEDGER_SCALE_DATABASE", "jl_scale")
JOBS, HOLDERS = 2_000_000, 50_000


def millions(count: int) -> str:
    """``10M``, ``2M``, ``0.02M``: the sizes in row names."""
    return f"{count / 1e6:.3g}M"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def database_url(name: str = DATABASE) -> URL:
    return parse_url(POSTGRES_SERVER_URL).set(database=name)


def text_url(name: str = DATABASE) -> str:
    return database_url(name).render_as_string(hide_password=False)


def _admin(statement: str) -> None:
    admin = create_engine(parse_url(POSTGRES_SERVER_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(statement))
    admin.dispose()


def create_database() -> None:
    _admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DATABASE}"')
    with Ledger(text_url()) as ledger:
        ledger.migrate()


def drop_database() -> None:
    _admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def build(jobs: int, holders: int) -> float:
    """Create and fill the database; the seconds the fill took."""
    create_database()
    started = time.monotonic()
    identities = list(scale_data.iter_holders(holders))
    start = scale_data.start_time(jobs)
    sealing = scale_data.build(libpq_url(text_url()), jobs, identities, start, say)
    say(f"filled {sealing.position:,} events in {time.monotonic() - started:.0f} s; analysing")
    engine = create_engine(database_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    spent = time.monotonic() - started
    say(f"built and analysed in {spent:.0f} s")
    return spent


# -- sizes ---------------------------------------------------------------------------

TABLES = ("jobledger_events", "jobledger_jobs", "jobledger_anchor")


def sizes(url: str) -> tuple[int, int, list[Row]]:
    """Jobs, events, and each table's heap and index bytes per million events."""
    engine = create_engine(url)
    with engine.connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobledger_jobs")).scalar_one()
        count = conn.execute(text("SELECT count(*) FROM jobledger_events")).scalar_one()
        rows = []
        for table in TABLES:
            heap, indexes = conn.execute(
                text(
                    "SELECT pg_table_size(CAST(:t AS regclass)), "
                    "pg_indexes_size(CAST(:t AS regclass))"
                ),
                {"t": table},
            ).one()
            per_million = (heap + indexes) / count * 1e6 / 2**20
            note = f"table {heap / 2**20:,.0f} MiB + indexes {indexes / 2**20:,.0f} MiB"
            rows.append(Row(f"size of {table} per 1M events", per_million, None, "MiB", note=note))
            say(f"{table}: {note}")
    engine.dispose()
    return int(jobs), int(count), rows


# -- 1. claim+complete: the big ledger against an empty one ------------------------------


class _Side:
    """claim+complete through the Ledger on one database (``claim_complete.LedgerSide``)."""

    def __init__(self, url: str, prefix: str, blocks: int, per_block: int) -> None:
        self.chunks = [claim_complete.ids(prefix, b, per_block) for b in range(blocks)]
        warm = claim_complete.ids(f"warm-{prefix}", 0, claim_complete.WARM_UP)
        claim_complete.enqueue(url, [j for chunk in self.chunks for j in chunk] + warm)
        self.runner = claim_complete.LedgerSide(url)
        self.runner.prepare([j for chunk in self.chunks for j in chunk] + warm)
        self.runner.run(warm)

    def block(self, number: int) -> None:
        self.runner.run(self.chunks[number])


def claim_one_process(big: str, empty: str, settings: Settings, tag: str) -> Paired:
    blocks, per_block = settings.pick(30, 80), settings.pick(25, 40)
    ours = _Side(big, f"{tag}-big", blocks, per_block)
    base = _Side(empty, f"{tag}-empty", blocks, per_block)
    paired = interleaved(blocks, per_block, ours.block, base.block)
    ours.runner.close()
    base.runner.close()
    return paired


def _process_main(
    url: str, prefix: str, blocks: int, per_block: int, barriers: dict[str, Any], side: str
) -> None:
    runner = _Side(url, prefix, blocks, per_block)
    barriers["ready"].wait(claim_complete.BARRIER_TIMEOUT)
    for block in range(blocks):
        barriers[f"{side}-start"].wait(claim_complete.BARRIER_TIMEOUT)
        runner.block(block)
        barriers[f"{side}-done"].wait(claim_complete.BARRIER_TIMEOUT)
    runner.runner.close()


def claim_processes(big: str, empty: str, settings: Settings, processes: int, tag: str) -> Paired:
    """``processes`` processes per ledger, the two ledgers' processes taking turns in blocks
    (as ``claim_complete.postgres_processes`` alternates its two sides)."""
    blocks, per_process = settings.pick(10, 24), settings.pick(40, 60)
    context = multiprocessing.get_context("spawn")
    barriers: dict[str, Any] = {"ready": context.Barrier(2 * processes + 1)}
    for side in ("big", "empty"):
        barriers[f"{side}-start"] = context.Barrier(processes + 1)
        barriers[f"{side}-done"] = context.Barrier(processes + 1)
    workers = [
        context.Process(
            target=_process_main,
            args=(url, f"{tag}-{side}-{p}", blocks, per_process, barriers, side),
        )
        for side, url in (("big", big), ("empty", empty))
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    barriers["ready"].wait(claim_complete.BARRIER_TIMEOUT)

    def turn(side: str) -> Callable[[int], None]:
        def run(_: int) -> None:
            barriers[f"{side}-start"].wait(claim_complete.BARRIER_TIMEOUT)
            barriers[f"{side}-done"].wait(claim_complete.BARRIER_TIMEOUT)

        return run

    paired = interleaved(blocks, processes * per_process, turn("big"), turn("empty"))
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a benchmark process failed (exit code {worker.exitcode})")
    return paired


def claim_rows(url: str, settings: Settings, events: int) -> list[Row]:
    tag = f"c{int(time.time())}"  # fresh job ids on every run against a kept ledger
    rows = []
    with postgres_database("jl_scale_empty") as empty:
        for processes in (1, 4):
            say(f"claim+complete, {processes} process(es): {events:,}-event ledger against empty")
            if processes == 1:
                paired = claim_one_process(url, empty, settings, tag)
            else:
                paired = claim_processes(url, empty, settings, processes, tag)
            say(f"  {paired.ours:,.0f} against {paired.baseline:,.0f} ops/s ({paired.ratio:.2f}x)")
            rows.append(
                Row(
                    f"claim+complete, {processes} process{'es' if processes > 1 else ''}, "
                    f"PostgreSQL, on {millions(events)} events",
                    paired.ours,
                    paired.baseline,
                    "ops/s",
                    "the same on an empty ledger",
                    "≥ 0.9x (unchanged within noise)",
                    met=paired.ratio >= 0.9,
                    note=paired.note(),
                    paired_ratio=paired.ratio,
                )
            )
    return rows


# -- 2. the recovery sweep --------------------------------------------------------------

LIVENESS_TTL = 600.0


def holders_of(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        query = "SELECT DISTINCT claimed_by FROM jobledger_jobs WHERE claimed_by IS NOT NULL"
        found = sorted(conn.execute(text(query)).scalars())
    engine.dispose()
    return found


def claimed_count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        query = "SELECT count(*) FROM jobledger_jobs WHERE claimed_by IS NOT NULL"
        count = int(conn.execute(text(query)).scalar_one())
    engine.dispose()
    return count


def sweep_alive(url: str, redis_url: str, sweeps: int) -> Row:
    """Sweeps while every holder is alive: nothing to do, which every sweep costs."""
    holders = holders_of(url)
    claims = claimed_count(url)
    with Ledger(url) as ledger:
        liveness = RedisLiveness(redis_url, ttl=LIVENESS_TTL)
        register_alive(liveness, holders)
        projector = RecoveryProjector(ledger, liveness, handle_signals=False)
        projector.run_once()  # warm caches and the baseline of live processes
        times = []
        for _ in range(sweeps):
            started = time.perf_counter()
            if projector.run_once():
                raise AssertionError("a sweep abandoned a live holder's job")
            times.append(time.perf_counter() - started)
        liveness.close()
    median = statistics.median(times)
    say(f"sweep, all alive: median {median * 1000:.0f} ms, slowest {max(times) * 1000:.0f} ms")
    return Row(
        f"recovery sweep, {millions(claims)} claimed jobs, {len(holders):,} holders "
        "all alive (median)",
        median * 1000,
        None,
        "ms",
        target="—",
        higher_is_better=False,
        note=f"slowest of {sweeps}: {max(times) * 1000:.0f} ms; Redis liveness",
    )


def _dead_sweep(url: str, redis_url: str) -> None:
    """The child process of :func:`sweep_dead`: one sweep of a freshly started projector."""
    logging.disable(logging.WARNING)  # one line per abandoned job otherwise
    with Ledger(url) as ledger:
        liveness = RedisLiveness(redis_url, ttl=LIVENESS_TTL)
        RecoveryProjector(ledger, liveness, handle_signals=False).run_once()
        liveness.close()


def sweep_dead(url: str, redis_url: str, budget: float) -> Row:
    """Every holder's liveness lapses; a projector (started afresh, as after an outage: a
    running one would see a mass death and pause) abandons and requeues every claim.

    The sweep runs in a child process; this one counts the claims left every 10 s.
    After ``budget`` seconds the child is killed and the rate so far extrapolated.
    """
    holders = holders_of(url)
    claims = claimed_count(url)
    liveness = RedisLiveness(redis_url, ttl=LIVENESS_TTL)
    register_alive(liveness, [])  # the epoch only
    keys = [liveness.key(h) for h in holders]
    for start in range(0, len(keys), 5000):
        liveness.client.delete(*keys[start : start + 5000])
    liveness.close()
    say(f"sweep, all {len(holders):,} holders lapsed: {claims:,} claims to end")
    child = multiprocessing.get_context("spawn").Process(target=_dead_sweep, args=(url, redis_url))
    started = time.monotonic()
    child.start()
    left = claims
    while child.is_alive() and time.monotonic() - started < budget:
        child.join(10)
        left = claimed_count(url)
        spent = time.monotonic() - started
        say(f"  {claims - left:,} ended in {spent:.0f} s ({(claims - left) / spent:,.0f} jobs/s)")
    finished = not child.is_alive()
    if not finished:
        child.kill()
    child.join()
    spent = time.monotonic() - started
    left = claimed_count(url)
    done = claims - left
    rate = done / spent
    if finished:
        note = f"all {claims:,} ended in {spent:.0f} s"
    else:
        note = (
            f"stopped after {spent:.0f} s with {done:,} of {claims:,} ended; "
            f"all would take ~{claims / max(rate, 1e-9) / 60:.0f} min at this rate"
        )
    say(f"  {note}")
    return Row(
        f"recovery sweep, {millions(claims)} claims of {len(holders):,} lapsed "
        "holders abandoned and requeued",
        rate,
        None,
        "jobs/s",
        target="—",
        note=f"{note}; 2 events a job (abandoned, requeued) in one transaction",
    )


# -- 3. verify, rebuild, export as a user runs them ---------------------------------------


def cli(url: str, *args: str, redis_url: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "jobledger.cli", "--database-url", url]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    return [*command, *args]


def timed(command: list[str], stdout: Any = subprocess.DEVNULL) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=stdout, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def audit_rows(url: str, events: int, scratch: Path) -> list[Row]:
    rows = []
    for name in ("verify", "rebuild", "export"):
        if name == "export":
            target = scratch / "export.jsonl"
            with target.open("wb") as out:
                seconds = timed(cli(url, "export"), stdout=out)
            note = f"{target.stat().st_size / 2**30:.1f} GiB written"
            target.unlink()
        else:
            seconds, note = timed(cli(url, name)), "2 worker processes (the default, 1 per CPU)"
        say(f"{name}: {events:,} events in {seconds:.0f} s ({events / seconds:,.0f} events/s)")
        rows.append(
            Row(
                f"jobledger {name}, {millions(events)} events, PostgreSQL",
                events / seconds,
                None,
                "events/s",
                target="—",
                note=f"{seconds:.0f} s wall, the CLI as a user runs it; {note}",
            )
        )
    return rows


# -- 4. the operator's reads --------------------------------------------------------------


def cli_reads(url: str, redis_url: str, runs: int, jobs: int) -> list[Row]:
    """p50/p95 of CLI commands, each a fresh process; against ``jobledger --help``'s start-up."""
    claimed, finished = scale_data.job_id(jobs // 2), scale_data.job_id(jobs // 2 + 60)
    commands = {
        "--help": ["--help"],
        f"status {claimed}": ["status", claimed],
        f"history {finished}": ["history", finished],
        "jobs --limit 100": ["jobs", "--limit", "100"],
        "jobs --state claimed --queue mail": ["jobs", "--state", "claimed", "--queue", "mail"],
        "jobs --state failed": ["jobs", "--state", "failed"],
        "jobs --state cancelled": ["jobs", "--state", "cancelled"],
        "jobs --state abandoned": ["jobs", "--state", "abandoned"],
        "queues": ["queues"],
        "processes": ["processes"],
        "head": ["head"],
    }
    rows = []
    for label, args in commands.items():
        times = [timed(cli(url, *args, redis_url=redis_url)) * 1000 for _ in range(runs + 1)][1:]
        median, p95 = statistics.median(times), percentile(times, 0.95)
        say(f"jobledger {label}: median {median:.0f} ms, p95 {p95:.0f} ms")
        rows.append(
            Row(
                f"`jobledger {label}` at {millions(jobs)} jobs (p50)",
                median,
                None,
                "ms",
                target="—",
                higher_is_better=False,
                note=f"p95 {p95:.0f} ms of {runs} runs, a new process each (start-up included)",
            )
        )
    return rows


WEB_TARGET_MS = 200.0


def web_reads(url: str, redis_url: str, requests: int, jobs: int) -> list[Row]:
    """Every page ``benchmarks/web_pages.py`` measures, on this ledger, over HTTP."""
    import web_pages

    claimed, finished = scale_data.job_id(jobs // 2), scale_data.job_id(jobs // 2 + 60)
    pages = [
        "/",
        "/attention",
        f"/jobs/{quote(claimed, safe='')}",
        f"/jobs/{quote(finished, safe='')}",
        "/verify",
        f"/search?q={claimed[:-2]}",
        "/api/overview",
        "/api/attention",
        "/api/processes",
        "/api/jobs?limit=1000",
        "/api/jobs?state=failed&limit=100",
        f"/api/history/{quote(finished, safe='')}",
    ]
    port = free_port()
    command = cli(url, "web", "--port", str(port), "--no-catch-up", "--verify-every", "0")
    command[5:5] = ["--redis-url", redis_url]
    command += ["--ttl", str(LIVENESS_TTL)]
    env = {**os.environ, "JOBLEDGER_WEB_TOKEN": ""}
    quiet = subprocess.DEVNULL
    server = subprocess.Popen(command, env=env, stdout=quiet, stderr=quiet)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        _wait_for(base + "/api/verify")
        for path in pages:
            times = web_pages.measure(base, path, requests)
            median, p95 = statistics.median(times), percentile(times, 0.95)
            say(f"{path}: median {median:.1f} ms, p95 {p95:.1f} ms")
            rows.append(
                Row(
                    f"web `{path}` at {millions(jobs)} jobs (p95)",
                    p95,
                    None,
                    "ms",
                    target=f"≤ {WEB_TARGET_MS:.0f} ms",
                    higher_is_better=False,
                    met=p95 <= WEB_TARGET_MS,
                    note=f"median {median:.1f} ms of {requests} requests",
                )
            )
    finally:
        server.terminate()
        server.wait(timeout=15)
    return rows


def _wait_for(address: str) -> None:
    for _ in range(600):
        try:
            with urllib.request.urlopen(address, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("jobledger web did not start")


# -- 5. archive ---------------------------------------------------------------------------


def archive_rows(url: str, events: int, scratch: Path) -> list[Row]:
    """``jobledger.archive.archive`` (issue 15 item 4) of the jobs that finished in the first
    half of the ledger's time span, through the API: events archived (written to the file
    and deleted) per second. A placeholder row where the checkout has no archival yet."""
    try:
        from jobledger.archive import archive
    except ImportError:
        say("archive: jobledger.archive does not exist in this checkout; not measured")
        return [
            Row(
                f"jobledger archive, {millions(events)} events, PostgreSQL",
                None,
                None,
                "",
                note="not measured: archival is not on main yet (hook: scale.archive_rows)",
            )
        ]
    engine = create_engine(url)
    with engine.connect() as conn:
        first, last = conn.execute(
            text("SELECT min(enqueued_at), max(updated_at) FROM jobledger_jobs")
        ).one()
    engine.dispose()
    cutoff = first + (last - first) / 2
    target = scratch / "scale-archive.jsonl.gz"
    with Ledger(url) as ledger:
        started = time.perf_counter()
        result = archive(ledger, cutoff, target)
        seconds = time.perf_counter() - started
    size = target.stat().st_size / 2**20
    target.unlink()
    moved = result.deleted_events
    say(f"archive: {result.deleted_jobs:,} jobs, {moved:,} events in {seconds:.0f} s")
    return [
        Row(
            f"archive of {millions(moved)} events out of {millions(events)}, PostgreSQL",
            moved / seconds,
            None,
            "events/s",
            target="—",
            note=f"{result.deleted_jobs:,} jobs in {seconds:.0f} s, file {size:,.0f} MiB; "
            f"{result.skipped:,} skipped, {result.kept:,} kept",
        )
    ]


# -- query plans --------------------------------------------------------------------------

#: The reads whose plans could degrade with size; each as the library sends it.
PLANS: dict[str, str] = {
    "sweep: claim holders (Reads.claim_holders)": (
        "SELECT claimed_by FROM jobledger_jobs WHERE claimed_by IS NOT NULL GROUP BY claimed_by"
    ),
    "sweep: claims of 5,000 holders (Reads.claims_held_by)": (
        "SELECT job_id, queue, claimed_by, claim_token, attempt, claimed_at, "
        "coalesce(heartbeat_at, claimed_at), now() FROM jobledger_jobs "
        "WHERE state = 'claimed' AND claimed_by IN ({holders})"
    ),
    "jobs --state cancelled (first page)": (
        "SELECT * FROM jobledger_jobs WHERE state = 'cancelled' ORDER BY job_id LIMIT 1000"
    ),
    "jobs --state abandoned (none at first)": (
        "SELECT * FROM jobledger_jobs WHERE state = 'abandoned' ORDER BY job_id LIMIT 1000"
    ),
    "web: abandoned under the attempt cap (Board.attention)": (
        "SELECT * FROM jobledger_jobs WHERE state = 'abandoned' AND attempt < 3 "
        "ORDER BY state, queue LIMIT 100"
    ),
    "jobs --state claimed --queue mail (first page)": (
        "SELECT * FROM jobledger_jobs WHERE state = 'claimed' AND queue = 'mail' "
        "ORDER BY job_id LIMIT 1000"
    ),
    "web: holders with counts (Board.holders)": (
        "SELECT claimed_by, count(*) FROM jobledger_jobs WHERE claimed_by IS NOT NULL "
        "GROUP BY claimed_by ORDER BY claimed_by LIMIT 1000"
    ),
    "web: rejected in the last window (Board.rejected)": (
        "SELECT * FROM jobledger_events WHERE position > {floor} AND type = 'rejected' "
        "ORDER BY position DESC LIMIT 100"
    ),
    "catch-up: events past a caught-up checkpoint": (
        "SELECT * FROM jobledger_events WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) "
        "AND (tx_id, position) > ((SELECT tx_id::text FROM jobledger_events "
        "ORDER BY position DESC LIMIT 1)::xid8, (SELECT max(position) FROM jobledger_events)) "
        "ORDER BY tx_id, position LIMIT 2000"
    ),
    "sealer: the anchor's last link": (
        "SELECT seq, digest FROM jobledger_anchor ORDER BY seq DESC LIMIT 1"
    ),
}


def plans(url: str) -> None:
    """EXPLAIN ANALYZE of each read in :data:`PLANS`: its top plan lines and time.

    ``{holders}`` stands for the first 5,000 holders as the sweep's IN list, ``{floor}``
    for the position 100,000 events back (the attention page's window)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        holders = ", ".join(f"'{h}'" for h in holders_of(url)[:5000])  # identities: no quotes
        last = conn.execute(text("SELECT max(position) FROM jobledger_events")).scalar_one()
        for label, template in PLANS.items():
            sql = template.format(holders=holders, floor=max(0, last - 100_000))
            lines = [r[0] for r in conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"))]
            say(f"plan: {label}")
            for line in lines[:6] + [line for line in lines if "Execution Time" in line]:
                print(f"    {line[:150]}", file=sys.stderr)  # IN lists run to pages
    engine.dispose()


# -- the whole run ------------------------------------------------------------------------

STAGES = ("sizes", "plans", "claim", "reads", "audit", "sweep", "archive")


def measure(settings: Settings, only: Sequence[str] = STAGES, budget: float = 1800.0) -> list[Row]:
    """Every stage in ``only``, in an order that keeps the ledger as built for the reads:
    the dead sweep (2M more events) and archive come last."""
    url = text_url()
    jobs, events, size_rows = sizes(url)
    rows: list[Row] = []
    if "sizes" in only:
        rows += size_rows
    if "plans" in only:
        plans(url)
    if "claim" in only:
        rows += claim_rows(url, settings, events)
    scratch = Path(os.environ.get("JOBLEDGER_SCALE_SCRATCH", "/tmp"))
    with RedisServer() as redis:
        holders = holders_of(url)
        liveness = RedisLiveness(redis.url, ttl=LIVENESS_TTL)
        register_alive(liveness, holders[: len(holders) // 2])  # half the holders alive
        liveness.close()
        if "reads" in only:
            rows += cli_reads(url, redis.url, settings.pick(5, 10), jobs)
            rows += web_reads(url, redis.url, settings.pick(5, 20), jobs)
        if "audit" in only:
            rows += audit_rows(url, events, scratch)
        if "sweep" in only:
            rows.append(sweep_alive(url, redis.url, settings.pick(5, 15)))
            rows.append(sweep_dead(url, redis.url, budget))
    if "archive" in only:
        rows += archive_rows(url, events, scratch)
    return rows


def run(settings: Settings) -> list[Row]:
    """For ``benchmarks/run.py --only scale``: build (unless ``JOBLEDGER_SCALE_KEEP`` names a
    kept database), measure, drop. Quick mode: 200k jobs (1M events) over 5k holders."""
    kept = os.environ.get("JOBLEDGER_SCALE_KEEP") == "1"
    if not (kept and _exists()):
        build(settings.pick(200_000, JOBS), settings.pick(5_000, HOLDERS))
    try:
        return measure(settings)
    finally:
        if not kept:
            drop_database()


def _exists() -> bool:
    admin = create_engine(parse_url(POSTGRES_SERVER_URL))
    with admin.connect() as conn:
        query = text("SELECT 1 FROM pg_database WHERE datname = :n")
        found = conn.execute(query, {"n": DATABASE}).first() is not None
    admin.dispose()
    return found


def print_rows(rows: Sequence[Row]) -> None:
    from run import table_line

    for row in rows:
        print(table_line(row))
    for row in rows:
        if row.note:
            print(f"- {row.benchmark}: {row.note}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("build", "measure", "drop"))
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--holders", type=int, default=HOLDERS)
    parser.add_argument("--only", nargs="+", choices=STAGES, default=STAGES)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument(
        "--sweep-budget", type=float, default=1800.0, help="seconds the dead sweep may run"
    )
    args = parser.parse_args(argv)
    if args.stage == "build":
        build(args.jobs, args.holders)
    elif args.stage == "measure":
        print_rows(measure(Settings(quick=args.quick), args.only, args.sweep_budget))
    else:
        drop_database()


if __name__ == "__main__":
    main()
