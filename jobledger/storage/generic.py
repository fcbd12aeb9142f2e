"""Any other SQLAlchemy dialect: a command is one transaction of two statements.

The guarded UPDATE of the projection row comes first; the event is inserted only
if it matched one row. A writer that lost the race has written nothing, and
``UNIQUE(job_id, version)`` backs the guard up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, func, insert
from sqlalchemy.sql.elements import ColumnElement

from ..schema import EVENT_FIELDS, STATUS_FIELDS, UtcDateTime, events, jobs
from .backend import Backend, CommandStatements, WriteStep, guarded_update, load_statement
from .driver import DriverStatement
from .rows import write_layout


class GenericBackend(Backend):
    """A dialect jobledger knows nothing special about (MySQL's clock aside)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def clock(self) -> ColumnElement[datetime]:
        if self.name in ("mysql", "mariadb"):
            return func.utc_timestamp(6, type_=UtcDateTime)
        return func.current_timestamp(type_=UtcDateTime)

    def commands(self, dialect: Dialect) -> CommandStatements:
        return TwoStatementCommands(self, dialect)


class TwoStatementCommands(CommandStatements):
    """Writes in two statements, inside the command's transaction."""

    #: Whether the event's insert leaves its position to the cursor's ``lastrowid`` (a
    #: rowid table) instead of returning it.
    positions_by_rowid = False

    def __init__(self, backend: Backend, dialect: Dialect) -> None:
        tx_id = backend.transaction_id()
        self.load = DriverStatement(load_statement(backend.clock()), dialect, ("job_id",))
        self.guarded_update = DriverStatement(guarded_update(), dialect, write_layout())
        # Binds named after the columns (the benchmarks' raw baseline sends them so).
        insert_event: Any = insert(events).values(tx_id=tx_id)
        if not self.positions_by_rowid:
            insert_event = insert_event.returning(events.c.position)
        self.insert_event = DriverStatement(
            insert_event, dialect, write_layout(event_prefix=""), EVENT_FIELDS
        )
        self.insert_status = DriverStatement(
            insert(jobs), dialect, write_layout(status_prefix=""), STATUS_FIELDS
        )
        self.append_steps = (
            WriteStep(self.guarded_update, guard=True),
            WriteStep(self.insert_event),
        )
        self.create_steps = (WriteStep(self.insert_status), WriteStep(self.insert_event))
