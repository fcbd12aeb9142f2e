"""Anchor commands: ``seal`` runs the sealer, ``head`` prints the head to publish.

``jobledger recover`` also runs a sealer (unless ``--no-seal``); ``seal`` is for
deployments that run none, or want it apart. ``verify --head`` checks a
published head (:mod:`jobledger.cli.audit`).
"""

from __future__ import annotations

import click

from .. import signals
from . import output
from .params import Seconds
from .settings import Settings, pass_settings


@click.command()
@click.option("--once", is_flag=True, help="Seal what can be sealed now, then exit.")
@click.option(
    "--interval",
    type=Seconds(),
    default=1.0,
    show_default=True,
    help="Seconds between looks for new events when idle.",
)
@pass_settings
def seal(settings: Settings, once: bool, interval: float) -> None:
    """Seal every committed event into the ledger-wide anchor, in commit order.

    Runs until SIGTERM or SIGINT. Several sealers at once are safe: they take
    turns on the anchor's checkpoint.
    """
    from ..sealer import Sealer  # noqa: PLC0415

    output.log_to_stderr(settings.debug)
    with (
        settings.ledger() as ledger,
        Sealer(ledger, interval=interval, handle_signals=True) as sealer,
    ):
        if once:
            with signals.sigterm_exits():
                sealed = sealer.run_once()
        else:
            sealer.run_forever()
            sealed = sealer.sealed
    click.echo(f"sealed {sealed} events", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
@pass_settings
def head(settings: Settings, as_json: bool) -> None:
    """Print the anchor's last link as SEQ:DIGEST, to publish somewhere append-only.

    `jobledger verify --head SEQ:DIGEST` (and `verify-export --head`) later
    checks that history up to it was not rewritten. Exit 1 if nothing is sealed.
    """
    with settings.ledger() as ledger:
        last = ledger.head()
    if last is None:
        raise click.ClickException("nothing is sealed yet (run `jobledger seal --once`)")
    if as_json:
        click.echo(output.to_json({"seq": last.seq, "digest": last.digest, "head": str(last)}))
    else:
        click.echo(str(last))
