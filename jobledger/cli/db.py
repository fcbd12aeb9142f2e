"""``jobledger db``: create, upgrade and check the schema (Alembic, imported only here)."""

from __future__ import annotations

import sys

import click

from .. import terminal
from ..database import mask
from . import output
from .settings import Settings, pass_settings


@click.group()
def db() -> None:
    """Schema management."""


@db.command("upgrade")
@pass_settings
def db_upgrade(settings: Settings) -> None:
    """Create or upgrade the jobledger tables to the newest revision."""
    from .. import migrate  # noqa: PLC0415

    ledger = settings.ledger()
    try:
        ledger.migrate()
        terminal.echo(
            f"{mask(settings.database_url)} is at revision {migrate.current(ledger.engine)}"
        )
    finally:
        ledger.close()


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="As a JSON object.")
@pass_settings
def db_current(settings: Settings, as_json: bool) -> None:
    """Show the schema revision of the database and the newest one; exit 1 if behind."""
    from .. import migrate  # noqa: PLC0415

    with settings.ledger() as ledger:
        revision = migrate.current(ledger.engine)
    head = migrate.head()
    if as_json:
        click.echo(
            output.to_json({"current": revision, "head": head, "up_to_date": revision == head})
        )
    else:
        terminal.echo(f"database: {revision or 'not migrated'}; newest: {head}")
    if revision != head:
        sys.exit(1)
