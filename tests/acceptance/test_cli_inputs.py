"""The CLI in a subprocess, given input it must refuse: one line, exit status, nothing written.

Also what it must not leave behind: no ``./jobledger.db`` from a read command, no
temporary folder from the demo (whose ledger ``--keep`` keeps on purpose).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jobledger import Ledger
from tests.helpers import JOBLEDGER


def run(
    *args: str | bytes, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBLEDGER_")}
    return subprocess.run(
        [JOBLEDGER, *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=120,
        cwd=cwd,
        env={**clean, **(env or {})},
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 or lines[0].startswith("Usage:"), done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


def _job_ids(url: str) -> list[str]:
    with Ledger(url) as ledger:
        return [status.job_id for status in ledger.jobs()]


# -- item 11: tracebacks instead of one-line errors --------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("[" * 500 + "]" * 500, "nested more than 100 levels deep"),
        ("[" * 20_000 + "]" * 20_000, "maximum recursion depth exceeded while decoding"),
        ("9" * 5000, "an integer has more than 4300 digits"),
        ('{"n": -' + "9" * 4301 + "}", "an integer has more than 4300 digits"),
    ],
    ids=["500 deep", "20000 deep", "5000 digits", "4301 digits"],
)
def test_enqueue_refuses_data_it_cannot_store(url: str, data: str, expected: str) -> None:
    done = run("--database-url", url, "enqueue", "j", "--data", data)
    assert_one_line_error(done, expected)
    assert _job_ids(url) == []


def test_undecodable_bytes_in_an_id_or_queue(url: str) -> None:
    """Before: UnicodeEncodeError tracebacks from the driver."""
    assert_one_line_error(run("--database-url", url, "enqueue", b"bad\xffid"), "not valid UTF-8")
    assert_one_line_error(
        run("--database-url", url, "enqueue", "j", "--queue", b"q\xff"), "queue", "UTF-8"
    )
    assert_one_line_error(run("--database-url", url, "status", b"bad\xffid"), "not valid UTF-8")
    assert_one_line_error(run("--database-url", url, "history", b"bad\xffid"), "not valid UTF-8")
    assert_one_line_error(run("--database-url", url, "cancel", b"bad\xffid"), "not valid UTF-8")
    assert _job_ids(url) == []


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--database-url", "postgresql://localhost:notaport/test", "not a database URL"),
        ("--database-url", "postgresql://[::1:5432/test", "not a database URL"),
        ("--redis-url", "redis://localhost:notaport/15", "not a Redis URL"),
        ("--redis-url", "redis://[::1:6379/15", "not a Redis URL"),
        ("--redis-url", "redis://:hunter2@localhost:6379/notadb", "must be a database number"),
    ],
)
def test_bad_urls(url: str, option: str, value: str, expected: str) -> None:
    args = [option, value] if option == "--database-url" else ["--database-url", url, option, value]
    done = run(*args, "processes")
    assert_one_line_error(done, expected)
    assert "hunter2" not in done.stderr


def test_status_at_the_end_of_the_calendar(url: str) -> None:
    """Before: OverflowError; now every event is before that instant."""
    assert run("--database-url", url, "enqueue", "j").returncode == 0
    done = run("--database-url", url, "status", "--at", "9999-12-31T23:59:59-01:00", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"enqueued": 1}
    done = run("--database-url", url, "status", "j", "--at", "0001-01-01T00:00:00+01:00")
    assert_one_line_error(done, "did not exist yet")


def test_export_of_an_empty_database_is_schema_missing(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    done = run("--database-url", f"sqlite:///{tmp_path / 'empty.db'}", "export")
    assert_one_line_error(done, "no up-to-date jobledger schema", "jobledger db upgrade")
    assert done.stdout == ""


def _an_export(url: str) -> str:
    assert run("--database-url", url, "enqueue", "j").returncode == 0
    return run("--database-url", url, "export").stdout


@pytest.mark.parametrize(
    ("key", "value"),
    [("version", "1"), ("position", None), ("job_id", 5), ("type", None), ("version", 1.5)],
)
def test_verify_export_reports_values_of_the_wrong_type(
    url: str, tmp_path: Path, key: str, value: object
) -> None:
    good = json.loads(_an_export(url))
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({**good, key: value}) + "\n")
    done = run("verify-export", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"line 1: {key} must be" in done.stdout
    assert "1 problems" in done.stderr


def test_verify_export_of_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\n")
    done = run("verify-export", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "line 1 is not UTF-8 text" in done.stdout
    assert "3 problems" in done.stderr


# -- item 13: questionable ids ------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["   ", "a\tb", "a\nb", "job\x1b[2J", "job\u2028", "\u202ejob", "job-1 "]
)
def test_questionable_ids_and_queue_names_are_refused(url: str, bad: str) -> None:
    assert_one_line_error(run("--database-url", url, "enqueue", "ok", bad), "job id")
    assert_one_line_error(run("--database-url", url, "enqueue", "ok", "--queue", bad), "queue")
    assert _job_ids(url) == []


# -- item 14: side effects -----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["jobs"],
        ["status"],
        ["status", "j"],
        ["history", "j"],
        ["processes"],
        ["verify"],
        ["export"],
        ["queues"],
        ["enqueue", "j"],
        ["recover", "--once"],
    ],
)
def test_no_command_but_db_upgrade_creates_the_default_database(
    tmp_path: Path, command: list[str]
) -> None:
    """Before: any command run without a URL left an empty ./jobledger.db behind."""
    done = run(*command, cwd=tmp_path)
    assert_one_line_error(done, "jobledger.db does not exist", "jobledger db upgrade")
    assert os.listdir(tmp_path) == []


def test_db_current_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    done = run("db", "current", "--json", cwd=tmp_path)
    assert done.returncode == 1
    assert json.loads(done.stdout)["current"] is None
    assert os.listdir(tmp_path) == []
    assert run("db", "upgrade", cwd=tmp_path).returncode == 0
    assert os.listdir(tmp_path) == ["jobledger.db"]


def test_enqueue_resumes_with_skip_existing(url: str) -> None:
    assert run("--database-url", url, "enqueue", "a", "b").returncode == 0
    again = run("--database-url", url, "enqueue", "a", "b", "c")
    assert_one_line_error(again, "'a', 'b' already exists")
    resumed = run("--database-url", url, "enqueue", "a", "b", "c", "--skip-existing")
    assert resumed.returncode == 0, resumed.stderr
    assert "enqueued 1 job on queue 'default' (2 already there)" in resumed.stdout
    other = run("--database-url", url, "enqueue", "c", "d", "--skip-existing", "--data", "{}")
    assert_one_line_error(other, "'c' already exists")
    assert _job_ids(url) == ["a", "b", "c"]


def test_demo_keeps_its_ledger_only_when_asked(tmp_path: Path) -> None:
    """Before: the demo's folder stayed in /tmp, and its ledger could not be found."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    kept = tmp_path / "tour.db"
    done = run("demo", "--keep", str(kept), env={"TMPDIR": str(temp)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"the ledger stays in {kept}" in done.stdout
    assert os.listdir(temp) == []
    listed = run("--database-url", f"sqlite:///{kept}", "jobs", "--state", "completed", "--json")
    assert len(listed.stdout.splitlines()) == 30
    assert_one_line_error(run("demo", "--keep", str(kept)), "exists")
