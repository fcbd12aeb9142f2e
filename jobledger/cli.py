"""The ``jobledger`` command line."""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import Any

import click

from . import migrate
from .database import DEFAULT_URL, mask
from .errors import LedgerError
from .ledger import Ledger


@dataclass
class Settings:
    database_url: str
    redis_url: str | None
    debug: bool

    def ledger(self, **kwargs: Any) -> Ledger:
        return Ledger(self.database_url, **kwargs)


pass_settings = click.make_pass_decorator(Settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="JOBLEDGER_DATABASE_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="SQLAlchemy URL of the ledger database (env JOBLEDGER_DATABASE_URL).",
)
@click.option(
    "--redis-url",
    envvar="JOBLEDGER_REDIS_URL",
    default=None,
    help="Redis URL for liveness; SQL leases are used without one (env JOBLEDGER_REDIS_URL).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for expected errors too.")
@click.pass_context
def cli(ctx: click.Context, database_url: str, redis_url: str | None, debug: bool) -> None:
    """jobledger: an honest, replayable record of every background job's life."""
    ctx.obj = Settings(database_url, redis_url, debug)


@cli.group()
def db() -> None:
    """Schema management."""


@db.command("upgrade")
@pass_settings
def db_upgrade(settings: Settings) -> None:
    """Create or upgrade the jobledger tables to the newest revision."""
    ledger = settings.ledger()
    try:
        ledger.migrate()
        click.echo(f"{mask(settings.database_url)} is at revision {migrate.current(ledger.engine)}")
    finally:
        ledger.close()


@db.command("current")
@pass_settings
def db_current(settings: Settings) -> None:
    """Show the schema revision of the database and the newest one available."""
    ledger = settings.ledger()
    try:
        revision = migrate.current(ledger.engine)
    finally:
        ledger.close()
    head = migrate.head()
    click.echo(f"database: {revision or 'not migrated'}; newest: {head}")
    if revision != head:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected errors become one clear line on stderr and exit status 1."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="jobledger", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LedgerError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
