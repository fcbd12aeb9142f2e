"""Stored events as the audit folds them, and reading them through SQLAlchemy.

:class:`StoredEvent` is the one event shape every fold here reads (replay,
verify, rebuild): the columns of ``jobledger_events`` by name, as a tuple.
Replay reads it through SQLAlchemy (:func:`by_job`); verify and rebuild build it
from the bulk readers' rows (:mod:`jobledger.audit.bulk`), with ``position``
``None`` and ``recorded_at`` the backend's moment text. (The class itself lives
with the other row shapes, in :mod:`jobledger.storage.rows`, so that each
backend can build it from its own rows.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.sql import Select

from ..schema import events
from ..storage import Backend, backend_for
from ..storage.rows import StoredEvent

__all__ = ["STREAM_BATCH", "StoredEvent", "by_job", "event_query"]

#: Rows SQLAlchemy fetches at a time while streaming events.
STREAM_BATCH = 10_000


def event_query(backend: Backend) -> Select[Any]:
    """Every event column, in the order of :class:`StoredEvent`.

    PostgreSQL and SQLite hand over raw text where decoding it in Python is
    cheaper than the driver's or the column type's own decoding (see
    ``Backend.stored_event``); other databases give the typed columns.
    """
    data, moment = backend.audit_event_columns()
    return select(
        events.c.position,
        events.c.job_id,
        events.c.version,
        events.c.type,
        events.c.process,
        data.label("data"),
        moment.label("recorded_at"),
        events.c.prev_hash,
        events.c.hash,
    )


def by_job(conn: Connection, query: Select[Any]) -> Iterator[tuple[str, Iterator[StoredEvent]]]:
    """Stream ``query`` (built on :func:`event_query`) one job at a time, oldest event first."""
    ordered = query.order_by(events.c.job_id, events.c.version)
    options = {"stream_results": True, "yield_per": STREAM_BATCH}
    rows = conn.execute(ordered, execution_options=options)
    stored = map(backend_for(conn).stored_event(), rows)
    return itertools.groupby(stored, key=_job_id)


def _job_id(event: StoredEvent) -> str:
    return event.job_id
