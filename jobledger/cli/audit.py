"""Audit commands: ``verify``, ``rebuild``, ``export`` and ``verify-export``.

``verify`` and ``rebuild`` may fork worker processes; SIGTERM exits them
cleanly (``signals.sigterm_exits``) and progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import sys
from typing import Any

import click

from .. import signals
from . import output
from .params import AnchorHead
from .settings import Settings, pass_settings

_workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes to spread a large ledger over [default: one per CPU, up to 8].",
)


_head_option = click.option(
    "--head",
    type=AnchorHead(),
    default=None,
    metavar="SEQ:DIGEST",
    help="A published anchor head (`jobledger head`): it must still be there, unchanged.",
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@_workers_option
@_head_option
@pass_settings
def verify(settings: Settings, as_json: bool, workers: int | None, head: Any) -> None:
    """Check every hash chain, lifecycle path, the projection and the anchor; exit 1 on problems."""
    with signals.sigterm_exits(), settings.ledger() as ledger, output.progress_bar() as bar:
        report = ledger.verify(
            progress=output.tracked(bar, "verifying"), workers=workers, head=head
        )
    output.report(report, as_json, "verify")


@click.command()
@_workers_option
@pass_settings
def rebuild(settings: Settings, workers: int | None) -> None:
    """Re-fold the status projection from the events, in one transaction."""
    with signals.sigterm_exits(), settings.ledger() as ledger, output.progress_bar() as bar:
        count = ledger.rebuild(progress=output.tracked(bar, "rebuilding"), workers=workers)
    click.echo(f"rebuilt the projection: {count} jobs", err=True)


@click.command()
@click.option("--since", type=int, default=None, metavar="POSITION", help="Only later events.")
@pass_settings
def export(settings: Settings, since: int | None) -> None:
    """Write every event as a JSON line to stdout (e.g. `jobledger export > events.jsonl`)."""
    # UTF-8 whatever the locale says: the hashes cover UTF-8 text.
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
    try:
        with settings.ledger() as ledger:
            count = ledger.export(out, since=since)
        out.flush()
    except BrokenPipeError:  # the reader went away, e.g. `jobledger export | head`
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    finally:
        with contextlib.suppress(ValueError):
            out.detach()  # hand sys.stdout its buffer back
    click.echo(f"exported {count} events", err=True)


@click.command("verify-export")
@click.argument("path", type=click.File("rb"))  # bytes: a line that is not UTF-8 is a problem
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@_head_option
def verify_export(path: Any, as_json: bool, head: Any) -> None:
    """Check an exported or archive file (hashes, chains, anchor) without any database.

    Exit 1 on problems. A gzip file (an archive) is read decompressed.
    """
    from .. import audit  # noqa: PLC0415

    lines: Any = path
    if path.peek(2)[:2] == b"\x1f\x8b":  # gzip's magic: an archive (jobledger archive)
        lines = gzip.GzipFile(fileobj=path, mode="rb")
    output.report(audit.verify_export(lines, head=head), as_json, "verify-export")
