"""The ``jobledger`` command line: the group, its commands, and :func:`main`.

One module per concern: ``settings`` (what the group's options set), ``params``
(option types), ``output`` (tables, JSON, reports, progress) and the commands by
what they do (``query``, ``operate``, ``recover``, ``audit``, ``anchor``, ``archive``, ``db``,
``demo``, ``web``).

Commands import what they use (the ledger, Alembic, Rich, redis-py) in their own
bodies, so `--help` and each command start without the others' dependencies.
"""

from __future__ import annotations

import sys
import traceback

import click

from .. import terminal
from ..database import DEFAULT_URL
from ..errors import LedgerError
from . import anchor, archive, audit, db, demo, operate, query, recover, web
from .params import PerQueue, Seconds
from .settings import Settings

__all__ = ["PerQueue", "Seconds", "Settings", "cli", "main"]


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
    help="Redis URL for liveness: redis://, redis+cluster://host:port[,...] or "
    "redis+sentinel://host:port[,...]/service; SQL leases are used without one "
    "(env JOBLEDGER_REDIS_URL).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for expected errors too.")
@click.pass_context
def cli(ctx: click.Context, database_url: str, redis_url: str | None, debug: bool) -> None:
    """jobledger: an honest, replayable record of every background job's life."""
    ctx.obj = Settings(database_url, redis_url, debug)


for _command in (
    db.db,
    operate.enqueue,
    operate.requeue,
    operate.cancel,
    query.jobs,
    query.status,
    query.history,
    query.processes,
    query.queues,
    recover.recover,
    demo.demo,
    audit.verify,
    audit.rebuild,
    audit.export,
    audit.verify_export,
    anchor.seal,
    anchor.head,
    archive.archive,
    archive.archives,
    web.web,
):
    cli.add_command(_command)


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
            for line in traceback.format_exc().splitlines():
                terminal.echo(line, err=True)
        terminal.echo(f"error: {exc}", err=True)
        sys.exit(1)
