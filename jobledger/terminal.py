"""Where text meets a terminal: every value shown to a person passes through here.

Job ids, queue names, error texts, payloads and process identities come from
whoever wrote to the ledger, so the CLI treats them as hostile. Nothing a value
contains may act on the terminal: Rich markup (``[/bold]`` crashes the table,
``[link=…]`` makes a link), emoji codes, escape sequences (``\\x1b[2J``), line
breaks that split a table row, or bidi controls that reorder what is shown.
So values reach Rich only as :class:`rich.text.Text` (never parsed as markup)
and every character that ``repr()`` would escape is shown as its escape
(``\\x1b``, ``\\n``, ``\\u202e``). A backslash stays as it is; ``--json`` output
tells a typed ``\\n`` from a line break.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(value: object) -> str:
    """``value`` as text whose every character prints as itself (no control codes)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def text(value: object, style: str = "") -> Text:
    """``value`` for a Rich table, title or line: plain text, never markup."""
    from rich.text import Text  # noqa: PLC0415 (Rich loads only for output that uses it)

    return Text(visible(value), style=style)


def console(stderr: bool = False) -> Console:
    """A Rich console that reads no markup, emoji codes or highlighting into strings."""
    from rich.console import Console  # noqa: PLC0415 (Rich loads only for output that uses it)

    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


def echo(message: object, err: bool = False) -> None:
    """Print one line of text for a person (``click.echo`` with control codes made visible)."""
    click.echo(visible(message), err=err)


class VisibleFormatter(logging.Formatter):
    """A log formatter whose lines (and tracebacks) carry no control codes."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return "\n".join(visible(line) for line in super().formatException(ei).splitlines())
