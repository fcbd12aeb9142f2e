"""``jobledger archive``, ``archives`` and ``verify-export`` of an archive, run as a user would."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from jobledger import Ledger
from jobledger.identity import new_identity
from tests.helpers import ledger_cli as jobledger


def _finished(url: str, *job_ids: str) -> str:
    """Finish the jobs, enqueue one more, seal; the ISO instant after them all."""
    with Ledger(url) as ledger:
        for job_id in job_ids:
            ledger.enqueue(job_id)
            ledger.complete(ledger.claim(job_id, new_identity()))
        ledger.enqueue("still-waiting")
    assert jobledger(url, "seal", "--once").returncode == 0
    time.sleep(0.01)
    moment = datetime.now(timezone.utc).isoformat()
    time.sleep(0.01)
    return moment


def test_archive_lists_and_verifies(url: str, tmp_path: Path) -> None:
    cutoff = _finished(url, "a", "b", "c")
    path = tmp_path / "old.jsonl.gz"
    done = jobledger(url, "archive", "--finished-before", cutoff, "--to", str(path), "--json")
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["jobs"], outcome["events"], outcome["deleted_events"]) == (3, 9, 9)
    assert outcome["file"] == str(path)
    listed = jobledger(url, "archives", "--json")
    (record,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (record["id"], record["file_sha256"]) == (1, outcome["file_sha256"])
    assert jobledger(url, "verify").returncode == 0
    alone = jobledger(url, "verify-export", str(path), "--json")
    assert alone.returncode == 0, alone.stdout
    assert json.loads(alone.stdout)["events"] == 9
    again = jobledger(url, "archive", "--finished-before", cutoff, "--to", str(path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("finished archive 1:")


def test_bad_input_is_one_line_and_deletes_nothing(url: str, tmp_path: Path) -> None:
    cutoff = _finished(url, "a")
    path = str(tmp_path / "old.jsonl.gz")
    unparsable = jobledger(url, "archive", "--finished-before", "last tuesday", "--to", path)
    assert unparsable.returncode == 2
    assert "--finished-before" in unparsable.stderr
    future = jobledger(url, "archive", "--finished-before", "2999-01-01T00:00:00Z", "--to", path)
    assert future.returncode == 1
    assert future.stderr.startswith("error: the cutoff 2999-01-01T00:00:00.000000Z is in the")
    assert len(future.stderr.splitlines()) == 1
    nowhere = str(tmp_path / "missing" / "old.jsonl.gz")
    unwritable = jobledger(url, "archive", "--finished-before", cutoff, "--to", nowhere)
    assert unwritable.returncode == 1
    assert unwritable.stderr.startswith("error: cannot write ")
    assert len(unwritable.stderr.splitlines()) == 1
    with Ledger(url) as ledger:
        assert ledger.status("a").state == "completed"
    assert jobledger(url, "archives", "--json").stdout == ""
