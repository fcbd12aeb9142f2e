"""Rows and records: projection rows as :class:`JobStatus`, event rows as :class:`Event`,
and both back as the values a write sends."""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, NamedTuple

from ..records import Event, JobStatus, status_columns
from ..schema import EVENT_FIELDS, STATUS_FIELDS

# Commands build JobStatus positionally from the projection's columns.
if tuple(field.name for field in dataclasses.fields(JobStatus)) != STATUS_FIELDS:
    raise RuntimeError("JobStatus fields must follow the columns of jobledger_jobs, in order")


def status_from_row(row: Any) -> JobStatus:
    return JobStatus(**{name: row._mapping[name] for name in STATUS_FIELDS})


def event_from_row(row: Any) -> Event:
    return Event(position=row.position, **{name: row._mapping[name] for name in EVENT_FIELDS})


class StoredEvent(NamedTuple):
    """An event as the audit folds it (:mod:`jobledger.audit`).

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


#: A status (or a fold's draft) and an event as tuples in column order; attrgetter runs in C.
#: JobStatus's fields are the projection's columns (checked above).
status_row = status_columns
event_row = operator.attrgetter(*EVENT_FIELDS)


def status_values(status: JobStatus) -> dict[str, Any]:
    return dict(zip(STATUS_FIELDS, status_row(status), strict=True))


def event_values(event: Event) -> dict[str, Any]:
    return dict(zip(EVENT_FIELDS, event_row(event), strict=True))


def write_layout(status_prefix: str = "j_", event_prefix: str = "e_") -> tuple[str, ...]:
    """The names of :func:`write_values`' fields, the columns under these prefixes.

    Every command statement draws its parameters from that one tuple; a statement
    whose binds are the bare column names of one table names that table's part
    without a prefix.
    """
    return (
        "expected",
        *(status_prefix + name for name in STATUS_FIELDS),
        *(event_prefix + name for name in EVENT_FIELDS),
    )


def write_values(expected: int, status: JobStatus, event: Event) -> tuple[Any, ...]:
    """What a write sends: the version it expects, the job's new status, the event."""
    return (expected, *status_row(status), *event_row(event))


def unread_layout(event_prefix: str = "e_") -> tuple[str, ...]:
    """:func:`write_layout` followed by the row the writer knows, under ``k_``."""
    return (*write_layout(event_prefix=event_prefix), *("k_" + name for name in STATUS_FIELDS))


def held_layout(event_prefix: str = "e_") -> tuple[str, ...]:
    """:func:`write_layout` followed by the last hash of the row the writer wrote itself."""
    return (*write_layout(event_prefix=event_prefix), "k_last_hash")


def unread_values(known: JobStatus, status: JobStatus, event: Event) -> tuple[Any, ...]:
    """What an unread write sends: :func:`write_values`, then the row it decided on."""
    return (*write_values(known.version, status, event), *status_row(known))


def held_values(known: JobStatus, status: JobStatus, event: Event) -> tuple[Any, ...]:
    """What a holder's unread write sends: :func:`write_values`, then the known row's hash."""
    return (*write_values(known.version, status, event), known.last_hash)
