"""``jobledger demo``: the command; the demo itself is ``jobledger.demo``, imported when run."""

from __future__ import annotations

import sys

import click

from .settings import Settings, pass_settings


@click.command()
@click.option(
    "--keep",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="PATH",
    help="Write the demo's ledger to this new SQLite file and keep it, to try the CLI on.",
)
@pass_settings
def demo(settings: Settings, keep: str | None) -> None:
    """Three real workers, one SIGKILLed mid-job, recovered live (no servers needed).

    Uses a fresh SQLite file in a temporary folder, removed at the end (or the
    file given with --keep), and SQL leases, or Redis liveness when --redis-url
    is given. Exits 0 only if every job completed and the ledger verifies.
    """
    from ..demo import run_demo  # noqa: PLC0415

    sys.exit(run_demo(settings.redis_url, keep=keep))
