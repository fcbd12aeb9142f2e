"""Alembic environment for jobledger's schema.

Run from code (``jobledger.migrate``), which hands over an open connection, or
from the command line with ``alembic -c alembic.ini ...`` in a checkout, which
reads ``JOBLEDGER_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from jobledger.database import DEFAULT_URL, engine_for
from jobledger.schema import VERSION_TABLE, metadata

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=metadata, version_table=VERSION_TABLE, **kwargs)  # type: ignore[arg-type]


def _run(connection: Connection) -> None:
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get(
        "JOBLEDGER_DATABASE_URL", DEFAULT_URL
    )


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    with engine_for(_url()).begin() as connection:
        _run(connection)
