"""Stored events as the audit folds them, and reading them through SQLAlchemy.

:class:`StoredEvent` is the one event shape every fold here reads (replay,
verify, rebuild): the columns of ``jobledger_events`` by name, as a tuple.
Replay reads it through SQLAlchemy (:func:`by_job`); verify and rebuild build it
from the bulk readers' rows (:mod:`jobledger.audit.bulk`), with ``position``
``None`` and ``recorded_at`` the backend's moment text.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import Connection, DateTime, Text, cast, select, type_coerce
from sqlalchemy.sql import Select

from ..schema import events

#: Rows SQLAlchemy fetches at a time while streaming events.
STREAM_BATCH = 10_000


class StoredEvent(NamedTuple):
    """An event as the audit folds it.

    The fields of :class:`~jobledger.records.Event`, as a tuple that hot loops
    build with ``tuple.__new__(StoredEvent, fields)``: no Python frame per event.
    """

    position: int | None
    job_id: str
    version: int
    type: str
    process: str | None
    data: Any
    recorded_at: Any  # a datetime; the backend's moment text when read by bulk
    prev_hash: str
    hash: str


def event_query(dialect: str) -> Select[Any]:
    """Every event column, in the order of :class:`StoredEvent`.

    PostgreSQL and SQLite hand over raw text where decoding it here is cheaper
    than the driver's or the column type's own decoding (see the ``_from_*``
    converters); other databases get the typed columns.
    """
    data: Any = events.c.data
    moment: Any = events.c.recorded_at
    if dialect == "postgresql":
        data = cast(events.c.data, Text)  # psycopg's JSONB loader costs twice json's decoder
        # The session runs in UTC (jobledger.audit.session.utc_session), so plain
        # timestamps are already what UtcDateTime would return.
        moment = type_coerce(events.c.recorded_at, DateTime(timezone=True))
    elif dialect == "sqlite":
        data = type_coerce(events.c.data, Text)
        moment = type_coerce(events.c.recorded_at, Text)
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
    stored = map(_CONVERTERS.get(conn.dialect.name, StoredEvent._make), rows)
    return itertools.groupby(stored, key=_job_id)


def _job_id(event: StoredEvent) -> str:
    return event.job_id


# json.loads minus its two Python-level wrappers, which only strip surrounding
# whitespace: JSONB's text output never has any.
_decode_jsonb = json.JSONDecoder().raw_decode


def _from_postgresql(row: Any) -> StoredEvent:
    position, job_id, version, kind, process, data, moment, prev_hash, hash_ = row
    value = _decode_jsonb(data)[0]
    fields = (position, job_id, version, kind, process, value, moment, prev_hash, hash_)
    return tuple.__new__(StoredEvent, fields)


def _from_sqlite(row: Any) -> StoredEvent:
    position, job_id, version, kind, process, data, moment, prev_hash, hash_ = row
    instant = datetime.fromisoformat(moment).replace(tzinfo=timezone.utc)  # stored as UTC
    try:
        value = json.loads(data)
    except ValueError:
        # Only an edit behind the ledger's back stores text that is not JSON; kept as
        # a string, the fold of an event that needs its data reports CorruptHistory.
        value = data
    fields = (position, job_id, version, kind, process, value, instant, prev_hash, hash_)
    return tuple.__new__(StoredEvent, fields)


_CONVERTERS: dict[str, Callable[[Any], StoredEvent]] = {
    "postgresql": _from_postgresql,
    "sqlite": _from_sqlite,
}
