"""The chaos run of benchmarks/chaos.py, short (under a minute per backend), must find nothing.

Workers SIGKILLed and SIGSTOPped past the TTL, a projector SIGKILLed, Redis restarted
empty, the database's backends terminated (PostgreSQL) or its write lock held past
the TTL (SQLite), and redelivery storms, all within 20 s; then the harness checks
the ledger's history and the workers' logs (see benchmarks/chaos_checks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "benchmarks" / "chaos.py"


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "seed"), [("postgres", 11), ("sqlite", 12)])
def test_short_chaos_run_finds_no_violation(
    backend: str, seed: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = dict(os.environ)
    if backend == "postgres":
        env["JOBLEDGER_BENCH_POSTGRES_URL"] = request.getfixturevalue("postgres_server_url")
        if shutil.which("redis-server") is None:
            service_missing("redis-server (for a private Redis)", "not installed")
    summary_path = tmp_path / "summary.json"
    command = [sys.executable, str(CHAOS), "--backend", backend, "--seed", str(seed)]
    command += ["--seconds", "20", "--jobs", "200", "--workers", "6", "--drain", "20"]
    command += ["--out", str(tmp_path / "run"), "--json", str(summary_path)]
    run = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert summary_path.exists(), f"the harness failed:\n{run.stdout}\n{run.stderr[-3000:]}"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert summary["violations"] == 0, run.stdout
    assert run.returncode == 0, run.stdout
    assert summary["completed"] + summary["left_abandoned"] == summary["jobs"] == 200
    # The chaos really happened, and some of it hit held jobs.
    assert summary["kills"] >= 2
    assert summary["stops"] >= 1
    assert summary["projector_kills"] >= 1
    assert summary["redeliveries"] >= 1
    assert summary["abandons"] >= 1
    if backend == "postgres":
        assert summary["redis_restarts"] == 1
        assert summary["backends_terminated"] >= 1
    else:
        assert summary["lock_holds"] >= 1
