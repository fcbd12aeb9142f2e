"""Values from the database reach the terminal as text: never markup, never control codes.

Job ids and queue names carry Rich markup (``[/bold]`` crashed every table,
``[link=…]`` made a link, ``:thumbs_up:`` became an emoji); error texts,
reasons and payloads carry escape sequences, line breaks, tabs and bidi
controls. Every human-readable command must show them literally, exit as
usual, and put no raw control character on the terminal; ``--json`` output
keeps the values exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import update

from jobledger import Ledger, SqlLiveness, Worker
from jobledger.identity import new_identity
from jobledger.schema import jobs as jobs_table
from tests.helpers import run_cli

MARKUP_ID = "evil[/bold]"
LINK_ID = "[link=https://evil.example]click-me[/link]"
ORPHAN_ID = "orphan[/u]"
QUEUE = "mail[/]:thumbs_up:"
ERROR = (
    "KeyError: '[/red]' \x1b[2J\x1b]8;;https://evil.example\x07click\x1b]8;;\x07"
    "\nsecond line\tafter a tab \u202eevil\u2028"
)
#: ERROR as shown: every control character as its escape, the markup as typed.
ERROR_SHOWN = (
    "KeyError: '[/red]' \\x1b[2J\\x1b]8;;https://evil.example\\x07click\\x1b]8;;\\x07"
    "\\nsecond line\\tafter a tab \\u202eevil\\u2028"
)
#: Wide enough that Rich never folds a value over two lines.
WIDE = {"COLUMNS": "400"}


@pytest.fixture
def url(tmp_path: Path, sqlite_template: Path) -> str:
    """A ledger with hostile ids, queue, error text and payload, written through the API."""
    shutil.copy(sqlite_template, tmp_path / "hostile.db")
    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    with Ledger(url) as ledger:
        ledger.enqueue(MARKUP_ID, queue=QUEUE, data={"note": "\x1b[31mred\u202e\u2028"})
        ledger.enqueue(LINK_ID, queue=QUEUE)
        ledger.fail(ledger.claim(LINK_ID, new_identity()), error=ERROR)
    return url


def shown(done: subprocess.CompletedProcess[str], *literals: str) -> str:
    """The command's output, checked: exit 0, no traceback, no raw control code, literals shown."""
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out
    assert _raw_controls(out) == []
    for literal in literals:
        assert literal in out
    return out


def _raw_controls(out: str) -> list[str]:
    return sorted({char for char in out if char != "\n" and not char.isprintable()})


@pytest.mark.parametrize(
    ("args", "literals"),
    [
        (["jobs"], [MARKUP_ID, LINK_ID, QUEUE, ERROR_SHOWN]),
        (["jobs", "--state", "failed"], [LINK_ID, ERROR_SHOWN]),
        (["status", MARKUP_ID], [f"{MARKUP_ID}: enqueued", QUEUE]),
        (["status", LINK_ID], [f"{LINK_ID}: failed", ERROR_SHOWN]),
        (["history", MARKUP_ID], [f"{MARKUP_ID}: enqueued", QUEUE, "\\u202e\\u2028"]),
        (["history", LINK_ID], [f"{LINK_ID}: failed", "'[/red]'", "\\u202eevil\\u2028"]),
        (["queues"], [QUEUE]),
        (["status"], ["2 jobs now"]),
    ],
)
def test_tables_show_values_as_text(url: str, args: list[str], literals: list[str]) -> None:
    out = shown(run_cli("--database-url", url, *args, env=WIDE), *literals)
    assert "\U0001f44d" not in out  # :thumbs_up: is not an emoji code here


def test_a_line_break_in_a_value_does_not_split_its_row(url: str) -> None:
    out = shown(run_cli("--database-url", url, "jobs", "--state", "failed", env=WIDE))
    (row,) = [line for line in out.splitlines() if LINK_ID in line]
    assert ERROR_SHOWN in row


def test_json_output_keeps_the_values_exactly(url: str) -> None:
    listed = run_cli("--database-url", url, "jobs", "--json")
    rows = {row["job_id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows[LINK_ID]["last_error"] == ERROR
    assert rows[MARKUP_ID]["queue"] == QUEUE
    (failed,) = [
        json.loads(line)
        for line in run_cli("--database-url", url, "history", LINK_ID, "--json").stdout.splitlines()
        if json.loads(line)["type"] == "failed"
    ]
    assert failed["data"] == {"error": ERROR}


def test_processes_shows_held_ids_as_text(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.enqueue("held[/i]")
        with Worker(ledger, SqlLiveness(ledger, ttl=30)) as worker:
            worker.claim("held[/i]")
            shown(
                run_cli("--database-url", url, "processes", env=WIDE), worker.identity, "held[/i]"
            )


def test_recover_once_names_jobs_as_text(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.enqueue(ORPHAN_ID)
        ledger.claim(ORPHAN_ID, new_identity(host="gone"))
    done = run_cli("--database-url", url, "recover", "--once", "--ttl", "1", "--grace", "0")
    shown(done, f"{ORPHAN_ID}: abandoned", "1 jobs recovered")
    assert "abandoned" in done.stderr  # the decisions are logged too


def test_operator_messages_and_refusals_show_ids_as_text(url: str) -> None:
    shown(
        run_cli("--database-url", url, "requeue", LINK_ID, "--reason", "fixed\x1b[2J"), "requeued 1"
    )
    shown(run_cli("--database-url", url, "history", LINK_ID, env=WIDE), "fixed\\u001b[2J")
    refused = run_cli("--database-url", url, "requeue", MARKUP_ID)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert f"error: job {MARKUP_ID!r}: cannot apply 'requeued'" in refused.stderr


def test_error_lines_show_control_characters_as_escapes(url: str) -> None:
    # The payload error names the offending key, which carries an escape sequence.
    done = run_cli("--database-url", url, "enqueue", "new", "--data", '{"a\\u001b[2J": "\\u0000"}')
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert _raw_controls(done.stderr) == []
    assert "a\\x1b[2J" in done.stderr


def test_verify_problems_show_values_as_text(url: str) -> None:
    with Ledger(url) as ledger, ledger.engine.begin() as conn:
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.job_id == LINK_ID)
            .values(last_error="tampered [/b]\x1b[1m\u202e", queue="[bold]other")
        )
    done = run_cli("--database-url", url, "verify")
    assert done.returncode == 1  # it found the tampering
    assert "Traceback" not in done.stdout + done.stderr
    assert _raw_controls(done.stdout + done.stderr) == []
    assert f"job {LINK_ID!r}" in done.stdout
    assert "[bold]other" in done.stdout
