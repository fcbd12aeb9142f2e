"""verify, rebuild and export of two checkouts of jobledger, alternating, on kept databases.

    python benchmarks/audit_throughput.py --keep jl_audit_1m --rounds 1   # fill once
    git archive main | tar -x -C /tmp/main-src
    flock /work/wt/bench.lock python benchmarks/audit_compare.py \\
        --keep jl_audit_1m /tmp/main-src . --rounds 3

Each measurement is a fresh process importing jobledger from one checkout
(``PYTHONPATH``), on the databases ``audit_throughput.py --keep NAME`` filled;
the checkouts alternate in ABBA order within each round, so that a load change
on a shared machine falls on both alike. The bare driver's COPY fetch runs in
each round as well, as the yardstick. Rates are events/s; medians per checkout.
Client CPU is the CPU time of the measured process and its worker processes per
event (not PostgreSQL's): less sensitive than the rate to other tenants' load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

STEPS = ("verify", "rebuild", "export")


def _child(url: str, step: str) -> None:
    """In the child: run ``step`` once on ``url``; print the events per second."""
    from jobledger import Ledger  # from the checkout on PYTHONPATH

    with Ledger(url) as ledger:
        cpu = os.times()
        started = time.perf_counter()
        if step == "verify":
            report = ledger.verify()
            assert report.ok, report.problems[:3]
            count = report.events
        elif step == "rebuild":
            ledger.rebuild()  # returns the number of jobs; the rate is in events
            count = _events(ledger)
        elif step == "export":
            with open(os.devnull, "w", encoding="utf-8") as out:
                count = ledger.export(out)
        else:
            count = _fetch(url)
        spent = time.perf_counter() - started
        after = os.times()
        used = sum(after[:4]) - sum(cpu[:4])  # this process and its (joined) workers
        if step == "rebuild" and url.startswith("postgresql"):
            with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("VACUUM ANALYZE jobledger_jobs")  # the old rows are dead
    print(count / spent, used / count * 1e6)


def _events(ledger: Any) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM jobledger_events").scalar_one())


def _fetch(url: str) -> int:
    import psycopg

    fetched = 0
    query = (
        "COPY (SELECT job_id, version, type, process, data, recorded_at, prev_hash, hash"
        " FROM jobledger_events ORDER BY job_id, version) TO STDOUT"
    )
    with (
        psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn,
        conn.cursor() as cursor,
        cursor.copy(query) as copy,
    ):
        while copy.read():
            fetched += 1
    return fetched


def _measure(source: str, url: str, step: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(source)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", step, url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rate, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(rate), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="NAME", help="as given to audit_throughput.py")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--child", nargs=2, metavar=("STEP", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("sources", nargs="*", help="checkouts (directories holding jobledger/)")
    args = parser.parse_args()
    if args.child:
        _child(args.child[1], args.child[0])
        return
    if not args.keep or len(args.sources) < 1:
        parser.error("--keep NAME and at least one checkout are needed")
    from common import POSTGRES_SERVER_URL  # the child needs none of it
    from sqlalchemy.engine import make_url

    server = make_url(POSTGRES_SERVER_URL).set(database=args.keep)
    url = (
        server.render_as_string(hide_password=False)
        if args.backend == "postgresql"
        else f"sqlite:////tmp/{args.keep}.db"
    )
    steps = args.steps.split(",")
    rates: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    for number in range(args.rounds):
        order = args.sources if number % 2 == 0 else args.sources[::-1]
        line = []
        if args.backend == "postgresql":
            rate, cpu = _measure(args.sources[0], url, "fetch")
            rates.setdefault(("fetch", ""), []).append(rate)
            cpus.setdefault(("fetch", ""), []).append(cpu)
            line.append(f"fetch {rate:,.0f}")
        for step in steps:
            for source in order if steps.index(step) % 2 == 0 else order[::-1]:
                rate, cpu = _measure(source, url, step)
                rates.setdefault((step, source), []).append(rate)
                cpus.setdefault((step, source), []).append(cpu)
                line.append(f"{step}[{source}] {rate:,.0f} ({cpu:.1f} us)")
        print(f"round {number + 1} ({os.getloadavg()[0]:.2f} load): " + ", ".join(line), flush=True)
    for key, values in rates.items():
        step, source = key
        print(
            f"{step:8} {source:24} median {statistics.median(values):>9,.0f} events/s, "
            f"client CPU {statistics.median(cpus[key]):5.2f} us/event; "
            + ", ".join(f"{v:,.0f}" for v in values)
        )


if __name__ == "__main__":
    main()
