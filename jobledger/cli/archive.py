"""Archival commands: ``archive`` moves finished jobs to a file, ``archives`` lists them.

``archive`` can be killed at any moment (even ``kill -9``); running it again with
the same ``--to`` finishes the work (:mod:`jobledger.archive`).
"""

from __future__ import annotations

from typing import Any

import click

from .. import signals
from . import output, params
from .settings import Settings, pass_settings


@click.command()
@click.option(
    "--finished-before",
    "cutoff",
    required=True,
    metavar="TIME",
    help="Archive jobs whose last event is older than this ISO-8601 instant (database clock).",
)
@click.option(
    "--to",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The archive file to write (gzip JSON lines); it must not exist, unless this "
    "finishes an interrupted archive to it.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Jobs deleted per transaction.",
)
@click.option("--json", "as_json", is_flag=True, help="The outcome as one JSON object.")
@pass_settings
def archive(settings: Settings, cutoff: str, path: str, batch: int, as_json: bool) -> None:
    """Move finished jobs to a file, then delete them; verify stays true for what remains.

    Archives jobs in a final state whose history is sealed in the anchor and
    delivered to every catch-up projection. `jobledger verify-export FILE`
    checks the file on its own. Interrupted, run it again with the same --to.
    """
    from ..archive import archive as run  # noqa: PLC0415

    before = params.instant(cutoff, "--finished-before")
    assert before is not None  # required
    with signals.sigterm_exits(), settings.ledger() as ledger, output.progress_bar() as bar:
        result = run(ledger, before, path, batch_size=batch, progress=_stages(bar))
    record = result.record
    summary: dict[str, Any] = {
        "archive": None if record is None else record.id,
        "file": None if record is None else record.path,
        "resumed": result.resumed,
        "jobs": 0 if record is None else record.jobs,
        "events": 0 if record is None else record.events,
        "deleted_jobs": result.deleted_jobs,
        "deleted_events": result.deleted_events,
        "kept": result.kept,
        "skipped": result.skipped,
        "file_sha256": None if record is None else record.file_sha256,
        "longest_batch_ms": round(result.longest_batch * 1000, 1),
    }
    if as_json:
        click.echo(output.to_json(summary))
    elif record is None:
        click.echo(f"nothing to archive ({result.skipped} finished jobs are not sealed yet)")
    else:
        verb = "finished archive" if result.resumed else "archive"
        click.echo(
            f"{verb} {record.id}: {record.jobs} jobs, {record.events} events in "
            f"{click.format_filename(record.path)} (sha256 {record.file_sha256}); deleted "
            f"{result.deleted_jobs} jobs now, {result.kept} kept (changed meanwhile), "
            f"{result.skipped} waiting to be sealed"
        )


def _stages(bar: Any) -> Any:
    """A progress callback of :func:`jobledger.archive.archive`: one bar per stage."""
    stages: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in stages:
            stages[stage] = output.tracked(bar, stage)
        stages[stage](done, total)

    return update


@click.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON lines, one record each.")
@pass_settings
def archives(settings: Settings, as_json: bool) -> None:
    """List the archive records, oldest first (`verify` checks them)."""
    from ..archive import list_archives  # noqa: PLC0415

    with settings.ledger() as ledger:
        records = list_archives(ledger)
    if as_json:
        for record in records:
            click.echo(output.to_json(record))
        return
    columns = ["id", "file", "cutoff", "jobs", "events", "deleted", "sha256", "finished"]
    rows = [
        [
            r.id,
            r.path,
            r.cutoff.isoformat(),
            r.jobs,
            r.events,
            r.deleted_events,
            r.file_sha256,
            r.finished_at.isoformat() if r.finished_at else "no: run archive --to it again",
        ]
        for r in records
    ]
    output.table("archives", columns, rows)
