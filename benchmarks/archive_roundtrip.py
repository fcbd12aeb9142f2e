"""Archive a large ledger with a SIGKILL mid-deletion, finish it, and check both halves.

On PostgreSQL, in a database of its own (dropped at the end): fill EVENTS events
in bulk (``audit_data.populate``, dated from 2026-01-01), seal them, start a
writer that runs claim+complete on fresh jobs throughout (recording how long
each command takes), run ``jobledger archive`` as a process, SIGKILL it once a
third of the jobs are deleted, run it again to the end (in this process, to
time its batches), then ``verify`` what remains and ``verify-export`` the file.

    flock /work/wt/bench.lock .venv/bin/python -m benchmarks.archive_roundtrip [EVENTS]

Prints one JSON object: rates, the longest batch transaction, the writer's
longest command before and during the archive (the ratio is the stall archival
adds), and whether verify and verify-export are ok. Exits 1 if either is not.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from benchmarks.audit_data import populate
from benchmarks.common import percentile, postgres_database
from jobledger import Ledger, audit
from jobledger.archive import archive, list_archives
from jobledger.database import engine_for
from jobledger.identity import new_identity
from jobledger.schema import archives
from jobledger.sealer import Sealer

EVENTS = 1_000_000
CUTOFF = "2026-06-01T00:00:00Z"
CUTOFF_INSTANT = datetime.fromisoformat(CUTOFF.replace("Z", "+00:00"))
JOBLEDGER = str(Path(sys.executable).parent / "jobledger")


class Writer(threading.Thread):
    """claim+complete on fresh jobs until stopped; each command's seconds, by phase."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.ledger = Ledger(url)
        self.phase = "before"
        self.latencies: dict[str, list[float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        identity, number = new_identity(), 0
        while not self.stop.is_set():
            job = f"writer-{number}"
            number += 1
            for command in (
                lambda job=job: self.ledger.enqueue(job),
                lambda job=job: self.ledger.complete(self.ledger.claim(job, identity)),
            ):
                started = time.perf_counter()
                command()
                self.latencies.setdefault(self.phase, []).append(time.perf_counter() - started)

    def summary(self, phase: str) -> dict[str, float]:
        values = self.latencies.get(phase, [0.0])
        return {
            "commands": len(values),
            "p50_ms": round(percentile(values, 0.5) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 1),
        }


def main(count: int) -> int:
    with postgres_database(prefix="jl_archive_bench") as url, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        engine = engine_for(url)
        populate([engine], count)
        filled = time.perf_counter() - started
        with Ledger(url) as ledger:
            Sealer(ledger, batch_size=10_000).run_once()
        path = Path(tmp) / "old.jsonl.gz"
        writer = Writer(url)
        writer.start()
        time.sleep(5)  # the writer's own pace, before archival starts
        writer.phase = "during"
        started = time.perf_counter()
        command = [JOBLEDGER, "--database-url", url, "archive", "--finished-before", CUTOFF]
        first = subprocess.Popen([*command, "--to", str(path), "--batch", "200"])
        recorded = None
        while True:
            with engine.connect() as conn:
                row = conn.execute(select(archives.c.deleted_jobs, archives.c.jobs)).first()
            if row is not None and recorded is None:
                recorded = time.perf_counter() - started
            if row is not None and row.deleted_jobs >= row.jobs // 3:
                break
            assert first.poll() is None, "archive ended before it could be killed"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = list_archives(engine)[0]
        with Ledger(url) as ledger:
            resumed_at = time.perf_counter()
            result = archive(ledger, CUTOFF_INSTANT, path, batch_size=200)
            resumed = time.perf_counter() - resumed_at
            writer.phase = "after"
            time.sleep(2)
            writer.stop.set()
            writer.join()
            verify_started = time.perf_counter()
            report = ledger.verify(workers=2)
            verified = time.perf_counter() - verify_started
        with gzip.open(path, "rb") as lines:
            export_started = time.perf_counter()
            alone = audit.verify_export(lines)
            export_checked = time.perf_counter() - export_started
        record = result.record
        assert record is not None
        engine.dispose()
        writer.ledger.close()
        out: dict[str, Any] = {
            "events": count,
            "fill_seconds": round(filled, 1),
            "archived_jobs": record.jobs,
            "archived_events": record.events,
            "file_bytes": path.stat().st_size,
            "write_events_per_s": round(record.events / (recorded or 1)),
            "killed_after_deleting_events": killed.deleted_events,
            "resumed_deleted_events": result.deleted_events,
            "delete_events_per_s": round(result.deleted_events / resumed),
            "longest_batch_ms": round(result.longest_batch * 1000, 1),
            "writer_before": writer.summary("before"),
            "writer_during": writer.summary("during"),
            "verify_ok": report.ok,
            "verify_archived": report.archived,
            "verify_events_left": report.events,
            "verify_seconds": round(verified, 1),
            "verify_export_ok": alone.ok,
            "verify_export_seconds": round(export_checked, 1),
        }
        print(json.dumps(out, indent=1))
        return 0 if report.ok and alone.ok and record.deleted_events == record.events else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else EVENTS))
