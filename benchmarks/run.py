"""Run jobledger's benchmarks and print (or store) the results table.

    python benchmarks/run.py [--quick] [--only NAME ...] [--readme]

Each benchmark is a module in this directory with ``run(settings) -> list[Row]``
(see ``common.py``). A module listed in ``BENCHMARKS`` but not written yet shows
its placeholder rows, so the table always has every row the benchmarks issue
asks for. ``--readme`` writes the table and the environment into README.md
between the ``results`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import platform
import sqlite3
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

from common import POSTGRES_SERVER_URL, Row, Settings, placeholder

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

#: Modules that run only when named in ``--only`` (they take an hour, not minutes).
HEAVY = {"scale"}

#: (module, rows to show until the module exists), in table order.
BENCHMARKS: list[tuple[str, list[Row]]] = [
    ("claim_complete", []),
    # Issue 12: the AsyncLedger against raw psycopg async, and against the sync Ledger.
    ("async_claim_complete", []),
    ("eventsourcing_append", []),
    ("enqueue_many", []),
    ("lifecycle_validation", []),
    (
        "audit_throughput",
        [
            placeholder(
                "verify and rebuild of 1M events (PostgreSQL, SQLite)",
                "raw driver fetch of the same rows",
                "≥ 300k events/s",
                "audit",
            )
        ],
    ),
    # Issue 15: the sealer must outrun the writers.
    ("seal_throughput", []),
    (
        "recovery_sweep",
        [
            placeholder(
                "recovery sweep, 100k claimed jobs over 5k holders", "—", "≤ 100 ms", "recovery"
            )
        ],
    ),
    # A mass death: a sweep ending thousands of dead claims.
    ("mass_recovery", []),
    (
        "detection_latency",
        [
            placeholder(
                "detection latency after SIGKILL (≥ 20 kills, TTL 3 s)",
                "RQ: SIGKILLed worker's job to its failed registry",
                "p99 ≤ TTL + 1 s",
                "recovery",
            )
        ],
    ),
    # The baseline of the row above, in a row of its own: RQ's figure, no jobledger figure.
    ("rq_detection", []),
    # Issue 3's other figure: live, busy workers under CPU load are never abandoned.
    ("false_abandon", []),
    # Issue 10: a requeued job back in RQ's queue.
    ("redelivery_latency", []),
    # Issue 10: Celery with record(app) against the same worker without it.
    ("celery_overhead", []),
    # Issue 15: liveness on a Redis Cluster against one Redis.
    ("liveness_cluster", []),
    # Issue 15: 10M events over 2M jobs on one PostgreSQL; heavy, so only with --only scale.
    (
        "scale",
        [
            placeholder(
                "claim+complete, recovery sweep, audit, reads at 10M events",
                "the same on an empty ledger",
                "≥ 0.9x",
                "scale: run with --only scale",
            )
        ],
    ),
    # Issue 10: what recording every RQ job costs an RQ worker.
    (
        "rq_overhead",
        [
            placeholder(
                "RQ burst worker, trivial jobs, every job recorded",
                "plain RQ worker",
                "≥ 0.8x",
                "rq",
            )
        ],
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a few minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these modules")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    settings = Settings(quick=args.quick)
    started = time.monotonic()
    rows: list[Row] = []
    failed = False
    for name, placeholders in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        if importlib.util.find_spec(name) is None or (name in HEAVY and not args.only):
            rows.extend(placeholders)
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            rows.extend(as_row(r) for r in importlib.import_module(name).run(settings))
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed = True
            rows.extend(placeholders or [Row(name, None, None, "", note="failed, see log")])
        print(f"  {name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    text = report(rows, command, time.monotonic() - started)
    print(text)
    if args.readme:
        write_readme(text)
    return 1 if failed else 0


def as_row(value: object) -> Row:
    """A :class:`Row`, also from a plain dict (for modules that do not import ``common``)."""
    return value if isinstance(value, Row) else Row(**value)  # type: ignore[arg-type]


def report(rows: list[Row], command: str, seconds: float) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} with `{command}` ({seconds / 60:.1f} min).",
        "",
        environment(),
        "",
        "| benchmark | jobledger | baseline | baseline is | ratio | target | met |",
        "|---|---:|---:|---|---:|---|:-:|",
    ]
    lines += [table_line(row) for row in rows]
    lines += ["", "Ratio: jobledger ÷ baseline for rates, baseline ÷ jobledger for times."]
    notes = [f"- {row.benchmark}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def table_line(row: Row) -> str:
    def figure(value: float | None) -> str:
        if value is None:
            return "—"
        # Counts (false abandons) are whole numbers: "0 jobs", not "0.000 jobs".
        digits = 0 if value.is_integer() else 3 if value < 1 else 1 if value < 100 else 0
        return f"{value:,.{digits}f} {row.unit}"

    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "—"
    met = {True: "yes", False: "**no**", None: "—"}[row.met]
    return (
        f"| {row.benchmark} | {figure(row.ours)} | {figure(row.baseline)} | "
        f"{row.baseline_name} | {ratio} | {row.target} | {met} |"
    )


def environment() -> str:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
        f"{platform.release()}. Python {platform.python_version()}, "
        f"PostgreSQL {postgres_version()}, SQLite {sqlite3.sqlite_version}, "
        f"SQLAlchemy {version('SQLAlchemy')}, psycopg {version('psycopg')}, "
        f"eventsourcing {version('eventsourcing')}, transitions {version('transitions')}."
    )


def postgres_version() -> str:
    try:
        import psycopg
        from common import libpq_url

        with psycopg.connect(libpq_url(POSTGRES_SERVER_URL), connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except Exception as exc:  # the table is still worth printing without it
        return f"unavailable ({type(exc).__name__})"


def write_readme(text: str) -> None:
    content = README.read_text() if README.exists() else f"{START}\n{END}\n"
    before, _, rest = content.partition(START)
    _, _, after = rest.partition(END)
    README.write_text(f"{before}{START}\n{text}\n{END}{after}")
    print(f"wrote {README}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
