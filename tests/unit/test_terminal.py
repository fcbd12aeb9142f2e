"""Text for a terminal: control characters become visible escapes, markup stays text."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from rich.console import Console

from jobledger.terminal import VisibleFormatter, text, visible


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain job-1", "plain job-1"),
        ("evil[/bold] :thumbs_up: \\n", "evil[/bold] :thumbs_up: \\n"),  # nothing to escape
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b[2J\x07\x7f\x85", "\\x1b[2J\\x07\\x7f\\x85"),
        ("\u202eevil\u2066\u200b\u2028\ufeff", "\\u202eevil\\u2066\\u200b\\u2028\\ufeff"),
        ("\U000e0001tag", "\\U000e0001tag"),
        ("bad\udcffbyte", "bad\\udcffbyte"),  # an undecodable argv byte: printable, no crash
        ("ünïcødé 日本 🙂", "ünïcødé 日本 🙂"),
        (42, "42"),
    ],
)
def test_visible(value: object, expected: str) -> None:
    assert visible(value) == expected


def test_rich_text_is_never_markup() -> None:
    out = io.StringIO()
    Console(file=out, width=200).print(text("[link=https://evil.example]x[/link] [/bold] :smile:"))
    assert out.getvalue() == "[link=https://evil.example]x[/link] [/bold] :smile:\n"


def test_log_lines_and_tracebacks_carry_no_control_codes() -> None:
    formatter = VisibleFormatter("%(levelname)s %(message)s")
    try:
        raise KeyError("\x1b[2J")
    except KeyError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "job %r held by %s", ("a", "b\x1b[31m\n"), True
        )
        record.exc_info = sys.exc_info()
    lines = formatter.format(record).splitlines()
    assert lines[0] == "ERROR job 'a' held by b\\x1b[31m\\n"
    assert lines[-1] == "KeyError: '\\x1b[2J'"
    assert all(char.isprintable() for line in lines for char in line)
