"""How commands print: compact JSON, Rich tables, verification reports, progress, logs.

Results go to stdout; progress, summaries and logs go to stderr, so
``--json`` output can be piped. Text from the database reaches the terminal
through ``terminal`` (escaped once, there). Rich is imported only when a table
or a progress bar is drawn.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from .. import terminal

if TYPE_CHECKING:
    from rich.progress import Progress

    from .. import audit


def to_json(value: Any) -> str:
    """``value`` as one line of JSON (datetimes in ISO 8601, dataclasses as objects)."""
    return json.dumps(value, default=_json_default, indent=None, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a Rich table to stdout; an empty cell for ``None``."""
    from rich.table import Table  # noqa: PLC0415

    drawn = Table(title=terminal.text(title), show_lines=False)
    for column in columns:
        drawn.add_column(column)
    for row in rows:
        drawn.add_row(*(terminal.text("" if cell is None else cell) for cell in row))
    terminal.console().print(drawn)


def ago(moment: datetime | None) -> str:
    """How long ago ``moment`` was, short: ``42s``, ``17m``, ``3.5h``."""
    if moment is None:
        return ""
    seconds = max(0.0, (datetime.now(timezone.utc) - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def report(found: audit.VerifyReport, as_json: bool, what: str) -> None:
    """Print a verification report; exit status 1 if it found problems."""
    if as_json:
        click.echo(
            to_json(
                {
                    "ok": found.ok,
                    "jobs": found.jobs,
                    "events": found.events,
                    "problem_count": found.problem_count,
                    "problems": found.problems,
                    "sealed": found.sealed,
                    "unsealed": found.unsealed,
                    "head": None if found.head is None else str(found.head),
                }
            )
        )
    else:
        for problem in found.problems:
            terminal.echo(problem)
        hidden = found.problem_count - len(found.problems)
        if hidden:
            click.echo(f"... and {hidden} more problems")
        verdict = "OK" if found.ok else f"{found.problem_count} problems"
        click.echo(f"{what}: {found.events} events of {found.jobs} jobs: {verdict}", err=True)
        if found.head is not None or found.unsealed:
            anchored = f"anchor: {found.sealed} events sealed, {found.unsealed} not yet"
            click.echo(f"{anchored}; head {found.head or '(none)'}", err=True)
    if not found.ok:
        sys.exit(1)


def progress_bar() -> Progress:
    """A progress bar on stderr (if it is a terminal), so stdout stays clean for results."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = terminal.console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        # No refresh thread: verify and rebuild fork worker processes only from a
        # single-threaded process, so the bar is redrawn from the progress callback.
        auto_refresh=False,
    )


def tracked(bar: Progress, description: str) -> audit.Progress:
    """A progress callback that moves a new task of ``bar``, redrawn at most ten times a second."""
    task = bar.add_task(description, total=None)
    last_drawn = 0.0

    def update(done: int, total: int) -> None:
        nonlocal last_drawn
        bar.update(task, completed=done, total=total)
        if time.monotonic() - last_drawn >= 0.1 or done >= total:
            bar.refresh()
            last_drawn = time.monotonic()

    return update


def log_to_stderr(debug: bool) -> None:
    """Send log records to stderr, control characters made visible; DEBUG with ``--debug``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        terminal.VisibleFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)
