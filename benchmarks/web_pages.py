"""How fast `jobledger web` answers on a big ledger: every page over HTTP, 1M jobs, 5M events.

The ledger lives in a database of its own (``jobledger_web_bench`` on the
benchmark server; ``--keep`` leaves it for the next run, which then skips the
fill). It is filled in SQL with ``generate_series``: 1M jobs over 5 queues in
every state (20,000 claimed by 200 holders, 150 of them dead), 5 events each.
The bulk rows carry placeholder hashes: only the pages' reads are measured, and
the job pages measured are of jobs written through the Ledger (their chains
are real). The queue figures (``queue_stats``) and their checkpoint are filled
from the jobs table, as a caught-up catch-up would have left them.

Then the real command serves it (``jobledger web`` under uvicorn, in a
subprocess, catch-up and background verify off so they do not compete with the
requests) and each page is fetched ``--requests`` times after a warm-up; the
median and the 95th percentile are reported against the 200 ms target.

    python benchmarks/web_pages.py                 # fill (~5-10 min on 2 cores) and measure
    python benchmarks/web_pages.py --keep          # keep the database for the next run
    python benchmarks/web_pages.py --jobs 100000   # a smaller ledger
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from urllib.parse import quote

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from jobledger import Ledger
from jobledger.database import parse_url
from jobledger.identity import new_identity
from jobledger.liveness import ProcessInfo, SqlLiveness
from jobledger.testing import DEFAULT_POSTGRES_URL, free_port

SERVER_URL = os.environ.get("JOBLEDGER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
DATABASE = "jobledger_web_bench"
TARGET_MS = 200.0
QUEUES = 5
HOLDERS, LIVE_HOLDERS = 200, 50
EVENTS_PER_JOB = 5
#: Final states by the job number modulo 100 (claimed: 2 %, so 20,000 of 1M jobs).
STATE_CASE = """CASE
    WHEN g % 100 < 80 THEN 'completed'
    WHEN g % 100 < 85 THEN 'failed'
    WHEN g % 100 < 88 THEN 'abandoned'
    WHEN g % 100 < 90 THEN 'cancelled'
    WHEN g % 100 < 98 THEN 'enqueued'
    ELSE 'claimed' END"""


def database_url(name: str) -> URL:
    return parse_url(SERVER_URL).set(database=name)


def create_database(rebuild: bool) -> bool:
    """Create the benchmark database; ``False`` if it is already there (and kept)."""
    admin = create_engine(parse_url(SERVER_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": DATABASE}
        ).first()
        if exists and not rebuild and _filled(database_url(DATABASE)):
            admin.dispose()
            return False
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    admin.dispose()
    return True


def drop_database() -> None:
    admin = create_engine(parse_url(SERVER_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    admin.dispose()


def fill(url: URL, jobs: int, holders: list[str]) -> None:
    """``jobs`` jobs and ``EVENTS_PER_JOB`` events each, in SQL, then the queue figures."""
    engine = create_engine(url)
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(
            text(f"""
            INSERT INTO jobledger_jobs (job_id, queue, state, version, attempt, claimed_by,
                claim_token, enqueued_at, claimed_at, heartbeat_at, finished_at, updated_at,
                last_error, last_hash)
            SELECT 'bulk-' || lpad(g::text, 8, '0'), 'queue-' || (g % {QUEUES}),
                s.state, {EVENTS_PER_JOB}, 1 + g % 3,
                CASE WHEN s.state = 'claimed'
                    THEN (CAST(:holders AS text[]))[1 + (g / 100) % {len(holders)}] END,
                CASE WHEN s.state = 'claimed' THEN 2 END,
                now() - make_interval(secs => g), now() - make_interval(secs => g - 1),
                CASE WHEN s.state = 'claimed' THEN now() - make_interval(secs => g % 600) END,
                CASE WHEN s.state IN ('completed', 'failed', 'cancelled')
                    THEN now() - make_interval(secs => g - 2) END,
                now() - make_interval(secs => g - 2),
                CASE WHEN s.state = 'failed' THEN 'boom ' || g END,
                md5(g::text) || md5(g::text)
            FROM generate_series(1, :jobs) AS g
            CROSS JOIN LATERAL (SELECT {STATE_CASE} AS state) AS s
            """),
            {"jobs": jobs, "holders": holders},
        )
        print(f"  jobs: {time.monotonic() - started:.0f}s", file=sys.stderr)
        # Events: enqueued, claimed, heartbeat, heartbeat, then the job's last move; one
        # rejected write every 50,000 events, so the attention page's window search is
        # close to its worst case (it stops early when it finds enough).
        conn.execute(
            text(f"""
            INSERT INTO jobledger_events (job_id, version, type, process, data, recorded_at,
                prev_hash, hash, tx_id)
            SELECT 'bulk-' || lpad(j::text, 8, '0'), v,
                CASE WHEN v = 1 THEN 'enqueued' WHEN v = 2 THEN 'claimed'
                     WHEN (j * {EVENTS_PER_JOB} + v) % 50000 = 0 THEN 'rejected'
                     WHEN v < {EVENTS_PER_JOB} THEN 'heartbeat'
                     ELSE 'completed' END,
                CASE WHEN v = 1 THEN NULL ELSE 'bench:1:0000000000000001' END,
                CASE WHEN v = 1 THEN jsonb_build_object('queue', 'queue-' || (j % {QUEUES}),
                                                       'data', jsonb_build_object('n', j))
                     ELSE '{{}}'::jsonb END,
                now() - make_interval(secs => j - v),
                md5(j::text || (v - 1)::text) || md5(j::text || (v - 1)::text),
                md5(j::text || v::text) || md5(j::text || v::text),
                pg_current_xact_id()
            FROM generate_series(1, :jobs) AS j, generate_series(1, {EVENTS_PER_JOB}) AS v
            ORDER BY j, v
            """),
            {"jobs": jobs},
        )
        print(f"  events: {time.monotonic() - started:.0f}s", file=sys.stderr)
        conn.execute(
            text("""
            INSERT INTO jobledger_queue_stats (queue, state, jobs, runs, run_seconds,
                max_run_seconds)
            SELECT queue, state, count(*), count(*) FILTER (WHERE state <> 'enqueued'),
                count(*) FILTER (WHERE state <> 'enqueued'), 1.0
            FROM jobledger_jobs GROUP BY queue, state
            """)
        )
        conn.execute(
            text("""
            INSERT INTO jobledger_checkpoints (name, position, tx_id, updated_at)
            SELECT 'queue_stats', max(position), max(tx_id::text::bigint), now()
            FROM jobledger_events
            """)
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(f"  filled and analysed: {time.monotonic() - started:.0f}s", file=sys.stderr)
    engine.dispose()


def real_jobs(ledger: Ledger, live: str) -> None:
    """A few jobs written through the Ledger (real chains), one with 1,000 heartbeats."""
    ledger.enqueue("real-short", queue="queue-0", data={"order": 1})
    ledger.complete(ledger.claim("real-short", live))
    ledger.enqueue("real-long", queue="queue-0", data={"order": 2})
    claim = ledger.claim("real-long", live)
    for beat in range(1000):
        ledger.heartbeat(claim, progress={"beat": beat})
    ledger.complete(claim)


def register(liveness: SqlLiveness, identities: list[str]) -> None:
    now = datetime.now(timezone.utc)
    for identity in identities:
        liveness.register(ProcessInfo(identity, "bench", 1, now))


def measure(base: str, path: str, requests: int) -> list[float]:
    """Milliseconds per request, after two warm-up requests."""
    times = []
    for index in range(requests + 2):
        started = time.perf_counter()
        with urllib.request.urlopen(base + path, timeout=30) as answer:
            answer.read()
            status = answer.status
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise AssertionError(f"{path}: HTTP {status}")
        if index >= 2:
            times.append(elapsed)
    return times


def serve(url: URL, ttl: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "jobledger.cli",
        "--database-url", url.render_as_string(hide_password=False),
        "web", "--port", str(port), "--no-catch-up", "--verify-every", "0", "--ttl", str(ttl),
    ]  # fmt: skip
    env = {**os.environ, "JOBLEDGER_WEB_TOKEN": ""}
    quiet = subprocess.DEVNULL
    server = subprocess.Popen(command, env=env, stdout=quiet, stderr=quiet)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(base + "/api/verify", timeout=2):
                return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise AssertionError("jobledger web did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--rebuild", action="store_true", help="refill a kept database")
    args = parser.parse_args()

    url = database_url(DATABASE)
    ttl = 3600.0
    holders = [new_identity() for _ in range(HOLDERS)]
    fresh = create_database(args.rebuild)
    ledger = Ledger(url)
    liveness = SqlLiveness(ledger, ttl=ttl)
    if fresh:
        print(f"filling {args.jobs:,} jobs, {args.jobs * EVENTS_PER_JOB:,} events", file=sys.stderr)
        ledger.migrate()
        fill(url, args.jobs, holders)
        with Ledger(url, heartbeat_interval=0) as writer:  # every heartbeat recorded
            real_jobs(writer, holders[0])
    # The first LIVE_HOLDERS holders are alive now; the others are presumed dead.
    live = list(holders[:LIVE_HOLDERS]) if fresh else _holders(url)[:LIVE_HOLDERS]
    register(liveness, live)
    job_pages = ["real-short", "real-long", f"bulk-{args.jobs // 2:08d}"]
    pages = [
        "/",
        "/attention",
        *(f"/jobs/{quote(job, safe='')}" for job in job_pages),
        "/verify",
        f"/search?q={job_pages[-1][:-2]}",  # a prefix: the ids that start with it
        "/api/overview",
        "/api/attention",
        "/api/processes",
        "/api/jobs?limit=1000",
        "/api/jobs?state=abandoned&limit=100",
        "/api/history/real-long",
    ]
    server, base = serve(url, ttl)
    rows = []
    try:
        counts = _counts(url)
        for path in pages:
            times = measure(base, path, args.requests)
            median = statistics.median(times)
            p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
            rows.append((path, median, p95))
            met = "yes" if p95 <= TARGET_MS else "**no**"
            print(f"{path:45s} median {median:7.1f} ms  p95 {p95:7.1f} ms  {met}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=15)
        liveness.close()
        ledger.close()
        if not args.keep:
            drop_database()
    print()
    print(f"{counts[0]:,} jobs, {counts[1]:,} events, PostgreSQL; {args.requests} requests a page")
    print("| page | median | p95 | ≤ 200 ms |")
    print("|---|---:|---:|:-:|")
    for path, median, p95 in rows:
        met = "yes" if p95 <= TARGET_MS else "**no**"
        print(f"| `{path}` | {median:.1f} ms | {p95:.1f} ms | {met} |")


def _holders(url: URL) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT DISTINCT claimed_by FROM jobledger_jobs "
                "WHERE claimed_by IS NOT NULL ORDER BY 1"
            )
        ).scalars()
        result = list(found)
    engine.dispose()
    return result


def _filled(url: URL) -> bool:
    """Whether a kept database was filled to the end (its queue figures' checkpoint exists)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT 1 FROM jobledger_checkpoints WHERE name = 'queue_stats'"
            return conn.execute(text(query)).first() is not None
    except Exception:  # no tables yet: an interrupted fill
        return False
    finally:
        engine.dispose()


def _counts(url: URL) -> tuple[int, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobledger_jobs")).scalar_one()
        events = conn.execute(text("SELECT max(position) FROM jobledger_events")).scalar_one()
    engine.dispose()
    return int(jobs), int(events)


if __name__ == "__main__":
    main()
