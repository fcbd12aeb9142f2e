"""What every command shares: the database, the liveness backend and ``--debug``.

The group's options fill a :class:`Settings`; a command asks for it with
``@pass_settings`` and opens the ledger through it, so the ledger is only imported
by the commands that open one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from ..liveness import DEFAULT_TTL, Liveness, liveness_for

if TYPE_CHECKING:
    from ..ledger import Ledger


@dataclass
class Settings:
    database_url: str
    redis_url: str | None
    debug: bool

    def ledger(self) -> Ledger:
        from ..ledger import Ledger  # noqa: PLC0415

        return Ledger(self.database_url)

    def liveness(self, ledger: Ledger, ttl: float = DEFAULT_TTL) -> Liveness:
        """Redis liveness if a Redis URL is set, else SQL leases where the ledger keeps them."""
        return liveness_for(ledger, self.redis_url, ttl)


pass_settings = click.make_pass_decorator(Settings)


def warn_of_secrets_on_argv(ctx: click.Context, **env_of: str) -> None:
    """Warn when a URL option given on the command line holds a password.

    Every user of the machine can read a process's arguments (``ps``) for as long
    as it runs, so long-running commands (``recover``) call this; their environment
    variables are not shown. ``env_of`` maps each URL parameter's name, of ``ctx``
    or of the group above it, to its variable.
    """
    from ..database import mask  # noqa: PLC0415 (SQLAlchemy: only when a URL is given)

    for name, env in env_of.items():
        owner = ctx if name in ctx.params else ctx.find_root()
        value = owner.params.get(name)
        if owner.get_parameter_source(name) is not ParameterSource.COMMANDLINE or not value:
            continue
        if mask(value) != value:
            option = "--" + name.replace("_", "-")
            click.echo(
                f"warning: {option} holds a password, which every user of this machine can "
                f"read in the process list while this runs; set {env} instead",
                err=True,
            )
