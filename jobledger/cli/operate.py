"""Commands that record events by hand: ``enqueue``, ``requeue`` and ``cancel``.

Requeue and cancel write one event per job, each its own transaction, as this
process; on the first refusal they stop and say how many went through.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from ..errors import LedgerError
from ..identity import new_identity
from ..records import JobStatus
from . import params
from .settings import Settings, pass_settings


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--queue", default="default", show_default=True, help="Queue of the new jobs.")
@click.option("--data", "data_json", default=None, help="JSON payload recorded with each job.")
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Skip ids already enqueued on this queue with this data (resumes an interrupted run).",
)
@pass_settings
def enqueue(
    settings: Settings,
    job_ids: tuple[str, ...],
    queue: str,
    data_json: str | None,
    skip_existing: bool,
) -> None:
    """Record new jobs (DuplicateJob if an id was ever used)."""
    data = None if data_json is None else params.payload(data_json)
    with settings.ledger() as ledger:
        try:
            count = ledger.enqueue_many(
                [(job_id, data) for job_id in job_ids], queue=queue, skip_existing=skip_existing
            )
        except LedgerError as exc:
            if exc.committed:
                click.echo("rerun the same command with --skip-existing to resume", err=True)
            raise
    skipped = f" ({len(job_ids) - count} already there)" if skip_existing else ""
    click.echo(f"enqueued {count} job{'s' if count != 1 else ''} on queue {queue!r}{skipped}")


_reason_option = click.option("--reason", default=None, help="Recorded with each event.")


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@_reason_option
@pass_settings
def requeue(settings: Settings, job_ids: tuple[str, ...], reason: str | None) -> None:
    """Put abandoned or failed jobs back in their queue (an operator's retry)."""
    from ..ledger import Ledger  # noqa: PLC0415

    _operator_moves(settings, job_ids, Ledger.requeue, reason, "requeued")


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@_reason_option
@pass_settings
def cancel(settings: Settings, job_ids: tuple[str, ...], reason: str | None) -> None:
    """Withdraw jobs that are still waiting in their queue."""
    from ..ledger import Ledger  # noqa: PLC0415

    _operator_moves(settings, job_ids, Ledger.cancel, reason, "cancelled")


def _operator_moves(
    settings: Settings,
    job_ids: tuple[str, ...],
    command: Callable[..., JobStatus],
    reason: str | None,
    done: str,
) -> None:
    """One event per job, in order, each its own transaction, recorded as this process.

    On the first refusal it stops, says how many were moved before, and exits 1.
    """
    me = new_identity()
    with settings.ledger() as ledger:
        for count, job_id in enumerate(job_ids):
            try:
                command(ledger, job_id, reason=reason, process=me)
            except LedgerError:
                if count:
                    click.echo(f"{done} {count} of {len(job_ids)} jobs before:", err=True)
                raise
    click.echo(f"{done} {len(job_ids)} job{'s' if len(job_ids) != 1 else ''}")
