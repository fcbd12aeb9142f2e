"""The audit commands of the ``jobledger`` CLI, run in a subprocess as a user would."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from jobledger import Ledger
from jobledger.identity import new_identity
from tests.helpers import ledger_cli as jobledger

A = new_identity()


@pytest.fixture
def url(tmp_path: Path, sqlite_template: Path) -> str:
    """A SQLite ledger with one completed, one requeued and one waiting job."""
    path = tmp_path / "ledger.db"
    path.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{path}"
    with Ledger(url, heartbeat_interval=0) as ledger:
        ledger.enqueue("a", queue="mail", data={"to": "ü@example.org"})
        claim = ledger.claim("a", A)
        ledger.heartbeat(claim, progress={"sent": 1})
        ledger.complete(claim, result={"ok": True})
        ledger.enqueue("b", queue="mail")
        ledger.fail(ledger.claim("b", A), "smtp down")
        ledger.requeue("b")
        ledger.enqueue("c", queue="reports")
    return url


def _lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_history_shows_the_timeline(url: str) -> None:
    human = jobledger(url, "history", "a")
    assert human.returncode == 0, human.stderr
    for text in ("a: completed after 4 events, attempt 1", "enqueued", "heartbeat", "completed"):
        assert text in human.stdout
    assert "+0." in human.stdout  # durations between steps
    steps = _lines(jobledger(url, "history", "a", "--json"))
    assert [s["type"] for s in steps] == ["enqueued", "claimed", "heartbeat", "completed"]
    assert [s["token"] for s in steps] == [None, 2, 2, 2]
    assert [s["attempt"] for s in steps] == [0, 1, 1, 1]
    assert steps[1]["process"] == A
    assert steps[0]["elapsed_seconds"] is None
    assert isinstance(steps[1]["elapsed_seconds"], float)
    assert steps[0]["data"] == {"queue": "mail", "data": {"to": "ü@example.org"}}


def test_status_now_and_as_of_an_instant(url: str) -> None:
    (counts,) = _lines(jobledger(url, "status", "--json"))
    assert counts == {"completed": 1, "enqueued": 2}
    (job,) = _lines(jobledger(url, "status", "a", "--json"))
    assert (job["state"], job["version"]) == ("completed", 4)

    with Ledger(url) as ledger:
        claimed_at = ledger.history("a")[1].recorded_at
        first = ledger.history("a")[0].recorded_at
    moment = claimed_at.isoformat().replace("+00:00", "Z")
    (then,) = _lines(jobledger(url, "status", "a", "--at", moment, "--json"))
    assert then["state"] in ("claimed", "completed")  # SQLite's clock ticks in milliseconds
    assert then["version"] >= 2
    early = (first - timedelta(seconds=1)).isoformat()
    (nothing,) = _lines(jobledger(url, "status", "--at", early, "--json"))
    assert nothing == {}
    missing = jobledger(url, "status", "a", "--at", early)
    assert missing.returncode == 1
    assert "did not exist yet" in missing.stderr
    bad = jobledger(url, "status", "--at", "yesterday")
    assert bad.returncode == 2
    assert "ISO-8601" in bad.stderr


def test_verify_passes_then_names_each_tampered_event(url: str) -> None:
    clean = jobledger(url, "verify")
    assert clean.returncode == 0, clean.stderr
    assert "verify: 9 events of 3 jobs: OK" in clean.stderr

    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute(
            'UPDATE jobledger_events SET data = \'{"result": {"ok": false}}\' '
            "WHERE job_id = 'a' AND version = 4"
        )
        conn.execute("DELETE FROM jobledger_events WHERE job_id = 'b' AND version = 2")
    damaged = jobledger(url, "verify")
    assert damaged.returncode == 1
    assert "job 'a' version 4: stored hash does not match" in damaged.stdout
    assert "job 'b' version 3: expected version 2" in damaged.stdout
    report = json.loads(jobledger(url, "verify", "--json").stdout)
    assert report["ok"] is False
    assert {(p["job_id"], p["version"]) for p in report["problems"]} >= {("a", 4), ("b", 3)}


def test_workers_can_be_chosen_and_nonsense_is_refused(url: str) -> None:
    assert jobledger(url, "verify", "--workers", "2").returncode == 0
    assert jobledger(url, "rebuild", "--workers", "1").returncode == 0
    refused = jobledger(url, "verify", "--workers", "0")
    assert refused.returncode == 2
    assert "--workers" in refused.stderr


def test_rebuild_restores_a_damaged_projection(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM jobledger_jobs WHERE job_id = 'a'")
    rebuilt = jobledger(url, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "3 jobs" in rebuilt.stderr
    assert jobledger(url, "verify").returncode == 0


def test_export_and_verify_the_file_alone(url: str, tmp_path: Path) -> None:
    exported = jobledger(url, "export")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines(keepends=True)
    assert len(lines) == 9
    assert "ü@example.org" in lines[0]  # UTF-8, not \\u escapes
    file = tmp_path / "events.jsonl"
    file.write_text("".join(lines), encoding="utf-8")
    assert jobledger(url, "verify-export", str(file)).returncode == 0

    since = json.loads(lines[5])["position"]
    later = jobledger(url, "export", "--since", str(since))
    assert later.stdout.splitlines(keepends=True) == lines[6:]

    file.write_text("".join(lines).replace('"smtp down"', '"all fine"'), encoding="utf-8")
    damaged = jobledger(url, "verify-export", str(file))
    assert damaged.returncode == 1
    assert "job 'b' version 3: stored hash does not match" in damaged.stdout


def test_export_into_a_closed_pipe_ends_quietly(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.enqueue_many([f"bulk-{n}" for n in range(5000)])
    command = [sys.executable, "-m", "jobledger.cli", "--database-url", url, "export"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.readline().startswith(b"{")
    process.stdout.close()
    errors = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(60) == 1
    assert "Traceback" not in errors


def test_queue_statistics(url: str) -> None:
    stats = {(s["queue"], s["state"]): s for s in _lines(jobledger(url, "queues", "--json"))}
    assert stats[("mail", "completed")]["jobs"] == 1
    assert stats[("mail", "completed")]["runs"] == 1
    assert stats[("mail", "failed")]["runs"] == 1
    assert stats[("mail", "enqueued")]["jobs"] == 1
    assert stats[("reports", "enqueued")]["jobs"] == 1


def test_an_unknown_job_is_one_clear_line(url: str) -> None:
    done = jobledger(url, "history", "nope")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: job 'nope' does not exist"


def test_verify_and_export_on_postgresql(postgres_url: str) -> None:
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    with Ledger(postgres_url) as ledger:
        ledger.enqueue("p")
        ledger.complete(ledger.claim("p", A))
    assert jobledger(postgres_url, "verify").returncode == 0
    exported = jobledger(postgres_url, "export")
    assert len(exported.stdout.splitlines()) == 3
    assert jobledger("sqlite://", "verify-export", "-", stdin=exported.stdout).returncode == 0
