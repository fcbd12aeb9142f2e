"""Alembic, driven from code: ``Ledger.migrate()`` and ``jobledger db upgrade|current``.

The migration scripts live in the top-level ``migrations/`` folder of a source
checkout and are shipped inside the wheel as ``jobledger/migrations``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from .database import creating, missing_file, translated_errors
from .errors import ConfigurationError
from .schema import VERSION_TABLE


def script_location() -> Path:
    """Where the migration scripts are: inside the installed package, or beside it in a checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(
        f"jobledger's migration scripts are missing (looked in {package}/migrations "
        f"and {package.parent}/migrations); reinstall jobledger"
    )


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` in one transaction."""
    with creating(), translated_errors(engine), engine.begin() as conn:
        command.upgrade(_config(conn), revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated."""
    if missing_file(engine) is not None:
        return None  # and no empty file is left behind for asking
    with translated_errors(engine), engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head() -> str | None:
    """The newest revision this installation ships."""
    return ScriptDirectory.from_config(_config()).get_current_head()
