"""``jobledger seal``, ``head``, ``verify --head``, ``verify-export --head`` and the
sealer in ``recover``, run in a subprocess as a user (or a cron job) would."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from jobledger import Ledger
from tests.helpers import ledger_cli as jobledger


def _enqueue(url: str, *job_ids: str) -> None:
    with Ledger(url) as ledger:
        for job_id in job_ids:
            ledger.enqueue(job_id)


def _head(url: str) -> str:
    done = jobledger(url, "head")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_seal_head_and_verify_with_the_head(url: str) -> None:
    _enqueue(url, "a", "b")
    nothing = jobledger(url, "head")
    assert nothing.returncode == 1
    assert "nothing is sealed yet" in nothing.stderr
    sealed = jobledger(url, "seal", "--once")
    assert sealed.returncode == 0, sealed.stderr
    assert "sealed 2 events" in sealed.stderr
    head = _head(url)
    assert head.startswith("2:")
    as_json = json.loads(jobledger(url, "head", "--json").stdout)
    assert as_json == {"seq": 2, "digest": head[2:], "head": head}
    _enqueue(url, "c")
    verified = jobledger(url, "verify", "--head", head, "--json")
    assert verified.returncode == 0, verified.stdout
    report = json.loads(verified.stdout)
    assert (report["sealed"], report["unsealed"], report["head"]) == (2, 1, head)


def test_verify_head_fails_after_a_rewrite_and_refuses_a_malformed_head(url: str) -> None:
    _enqueue(url, "a", "victim", "b")
    jobledger(url, "seal", "--once")
    head = _head(url)
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:  # the attacker: rewrite, then re-seal from scratch
        db.execute("DELETE FROM jobledger_events WHERE job_id = 'victim'")
        db.execute("DELETE FROM jobledger_jobs WHERE job_id = 'victim'")
        db.execute("DELETE FROM jobledger_anchor")
        db.execute("UPDATE jobledger_checkpoints SET position = 0 WHERE name = 'anchor'")
    _enqueue(url, "cover")
    jobledger(url, "seal", "--once")
    assert jobledger(url, "verify").returncode == 0
    caught = jobledger(url, "verify", "--head", head)
    assert caught.returncode == 1
    assert "anchor link 3 is not the published head" in caught.stdout
    malformed = jobledger(url, "verify", "--head", "3:nothex")
    assert malformed.returncode == 2
    assert "SEQ:DIGEST" in malformed.stderr


def test_verify_export_checks_a_published_head(url: str, tmp_path: Path) -> None:
    _enqueue(url, "a", "b", "c")
    jobledger(url, "seal", "--once")
    head = _head(url)
    exported = jobledger(url, "export")
    path = tmp_path / "events.jsonl"
    path.write_text(exported.stdout, encoding="utf-8")
    ok = jobledger(url, "verify-export", str(path), "--head", head)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(exported.stdout.splitlines(keepends=True)[:-1]), encoding="utf-8")
    caught = jobledger(url, "verify-export", str(cut), "--head", head)
    assert caught.returncode == 1
    assert "the published head's link 3 is gone" in caught.stdout


def test_recover_seals_unless_told_not_to(url: str) -> None:
    _enqueue(url, "a")
    assert jobledger(url, "recover", "--once", "--no-seal").returncode == 0
    assert jobledger(url, "head").returncode == 1
    assert jobledger(url, "recover", "--once").returncode == 0
    assert _head(url).startswith("1:")


def test_seal_runs_until_sigterm(url: str) -> None:
    _enqueue(url, "a")
    command = [sys.executable, "-m", "jobledger.cli", "--database-url", url]
    process = subprocess.Popen(
        [*command, "seal", "--interval", "0.1"], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while jobledger(url, "head").returncode != 0:
            assert time.monotonic() < deadline, "seal did not seal"
            time.sleep(0.1)
        _enqueue(url, "b")
        while not _head(url).startswith("2:"):
            assert time.monotonic() < deadline, "seal did not seal the new event"
            time.sleep(0.1)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "sealed 2 events" in stderr
