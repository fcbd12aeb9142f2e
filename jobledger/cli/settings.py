"""What every command shares: the database, the liveness backend and ``--debug``.

The group's options fill a :class:`Settings`; a command asks for it with
``@pass_settings`` and opens the ledger through it, so the ledger is only imported
by the commands that open one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

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
