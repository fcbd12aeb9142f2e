"""What a liveness backend must do, and the values it hands out.

A live process keeps a record with a time-to-live alive by refreshing it; a
process that dies stops refreshing and its record lapses. The backend's own
clock (Redis's, or the database's) decides when; worker clocks are never
compared with each other.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable

from .. import bounds

#: Seconds a process stays alive without refreshing its record.
DEFAULT_TTL = 15.0
#: Identities per round trip when thousands are asked about at once: keys per Redis
#: command, or values per SQL ``IN (...)`` list (SQLite allows 32766 bound variables).
CHUNK = 5000


def chunked(identities: list[str]) -> Iterator[list[str]]:
    """``identities`` in slices of at most :data:`CHUNK`, in order."""
    for start in range(0, len(identities), CHUNK):
        yield identities[start : start + CHUNK]


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What a live process says about itself in its liveness record."""

    identity: str
    host: str
    pid: int
    started_at: datetime
    quiet: bool = False
    busy: int = 0


@dataclass(frozen=True, slots=True)
class Incarnation:
    """Which life of the backend we are talking to.

    ``run_id`` changes when a Redis server restarts or fails over; ``epoch`` is a
    random value the first user stores without expiry, so a flush or a restart
    that forgot every key shows up as a missing or different epoch. ``age`` is
    how long ago the epoch was created, by the backend's own clock (``None``:
    a backend that cannot forget, such as the lease table).
    """

    run_id: str | None
    epoch: str | None
    age: float | None = None

    def same_life(self, other: Incarnation) -> bool:
        """Whether both describe the same, uninterrupted life of the backend."""
        return (self.run_id, self.epoch) == (other.run_id, other.epoch)


@runtime_checkable
class Liveness(Protocol):
    """The small protocol every liveness backend implements."""

    ttl: float

    def register(self, info: ProcessInfo) -> None:
        """Create (or overwrite) the process's record with a fresh TTL."""

    def refresh(self, info: ProcessInfo) -> bool:
        """Extend the record's TTL; ``False`` (and nothing written) if the record was gone."""

    def unregister(self, identity: str) -> None:
        """Remove the record and forget the process (a graceful exit)."""

    def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        """Seconds each identity has left to live, ``None`` if lapsed: one round trip."""

    def alive(self, identities: Collection[str]) -> dict[str, bool]:
        """Whether each identity's record exists: one round trip, whatever the count."""

    def processes(self) -> list[ProcessInfo]:
        """Every live process's record."""

    def known(self) -> set[str]:
        """Every identity registered and not yet forgotten, alive or lapsed."""

    def forget(self, identities: Collection[str]) -> None:
        """Drop lapsed identities from the registry (their records are already gone)."""

    def incarnation(self) -> Incarnation:
        """The backend's current run id and epoch (creating the epoch if missing)."""

    def close(self) -> None:
        """Release connections."""


def first_live(liveness: Liveness, limit: int | None) -> tuple[list[ProcessInfo], int]:
    """The first ``limit`` live processes by identity (``None``: all), and how many are
    alive in all.

    A backend with a ``first_processes(limit)`` (Redis and SQL) reads only those records
    and counts the rest; of any other, every record is read. The count is taken in the
    same read as the list on SQL, a moment apart on Redis: never fewer than those listed.
    """
    if limit is not None:
        bounds.count(limit, "limit", minimum=0)
    read_first = getattr(liveness, "first_processes", None)
    if limit is not None and read_first is not None:
        first, live = read_first(limit)
        return first, max(live, len(first))
    every = sorted(liveness.processes(), key=lambda info: info.identity)
    return every[:limit], len(every)


_Backend = TypeVar("_Backend", bound="LivenessBackend")


class LivenessBackend(abc.ABC):
    """What jobledger's own backends share; a backend of yours need only meet :class:`Liveness`.

    ``alive()`` is read from ``remaining()``; used as a context manager, the
    backend is closed when the block ends.
    """

    ttl: float

    @abc.abstractmethod
    def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        """Seconds each identity has left to live, ``None`` if lapsed: one round trip."""

    def alive(self, identities: Collection[str]) -> dict[str, bool]:
        """Whether each identity's record exists: one round trip, whatever the count."""
        return {identity: left is not None for identity, left in self.remaining(identities).items()}

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connections this backend opened (never a caller's)."""

    def __enter__(self: _Backend) -> _Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
