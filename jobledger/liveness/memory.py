"""Liveness kept in this process's memory, on a clock the caller may drive.

Meant for tests of code that uses jobledger: a recovery projector (or a worker)
given a :class:`MemoryLiveness` and a :class:`jobledger.testing.ManualClock`
decides as it would with Redis, with no real TTL to wait out. It keeps Redis's
rules: a record lapses one TTL after its last write, a refresh never revives a
lapsed record, ``forget`` drops identities from the registry whatever their
state. It can also act out what happens to a real backend: a restart or a
flush (every record lost, a new incarnation), the death of a process, an outage.

One instance stands for the one backend every process shares: hand the same
object to the workers and to the projector.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .. import bounds
from ..errors import LivenessUnavailable
from .base import Incarnation, ProcessInfo


@dataclass(frozen=True, slots=True)
class _Record:
    info: ProcessInfo
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Epoch:
    value: str
    born: float


class MemoryLiveness:
    """The :class:`~jobledger.liveness.Liveness` protocol in a dict, for tests."""

    def __init__(
        self,
        ttl: float = 15.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        age: float = 3600.0,
    ) -> None:
        """``age``: how long ago this backend's life began. The default is old enough for a
        projector to trust lapses at once; ``age=0`` acts out a backend that just started."""
        bounds.seconds(ttl, "ttl")
        bounds.seconds(age, "age", zero=True)
        self.ttl = float(ttl)
        self.clock = clock
        #: While true, every call raises ``LivenessUnavailable``, as a backend that is down.
        self.down = False
        self._lock = threading.Lock()  # workers refresh from their own threads
        self._records: dict[str, _Record] = {}
        self._registry: set[str] = set()
        self._run = 1
        self._epoch: _Epoch | None = _Epoch(secrets.token_hex(8), clock() - age)

    def __repr__(self) -> str:
        return f"MemoryLiveness(ttl={self.ttl})"

    # -- acting out what happens to a real backend ---------------------------------------

    def restart(self) -> None:
        """The backend restarted with nothing kept: new run id, every record and epoch lost."""
        with self._lock:
            self._run += 1
            self._lose_everything()

    def flush(self) -> None:
        """Someone flushed the backend: same run id, every record and the epoch lost."""
        with self._lock:
            self._lose_everything()

    def kill(self, *identities: str) -> None:
        """These processes died a TTL ago: their records lapsed, their identities still known."""
        with self._lock:
            for identity in identities:
                self._records.pop(identity, None)

    def _lose_everything(self) -> None:
        self._records.clear()
        self._registry.clear()
        self._epoch = None

    # -- the Liveness protocol -----------------------------------------------------------

    def register(self, info: ProcessInfo) -> None:
        with self._lock:
            self._check_up()
            self._records[info.identity] = _Record(info, self.clock() + self.ttl)
            self._registry.add(info.identity)

    def refresh(self, info: ProcessInfo) -> bool:
        with self._lock:
            self._check_up()
            now = self.clock()
            if self._left(info.identity, now) is None:
                return False  # a lapsed process does not quietly revive
            self._records[info.identity] = _Record(info, now + self.ttl)
            return True

    def unregister(self, identity: str) -> None:
        with self._lock:
            self._check_up()
            self._records.pop(identity, None)
            self._registry.discard(identity)

    def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        with self._lock:
            self._check_up()
            now = self.clock()
            return {identity: self._left(identity, now) for identity in identities}

    def alive(self, identities: Collection[str]) -> dict[str, bool]:
        return {identity: left is not None for identity, left in self.remaining(identities).items()}

    def processes(self) -> list[ProcessInfo]:
        with self._lock:
            self._check_up()
            now = self.clock()
            live = sorted(i for i in list(self._records) if self._left(i, now) is not None)
            return [self._records[identity].info for identity in live]

    def known(self) -> set[str]:
        with self._lock:
            self._check_up()
            return set(self._registry)

    def forget(self, identities: Collection[str]) -> None:
        with self._lock:
            self._check_up()
            self._registry.difference_update(identities)

    def incarnation(self) -> Incarnation:
        with self._lock:
            self._check_up()
            now = self.clock()
            if self._epoch is None:  # as the first user after a restart or flush creates it
                self._epoch = _Epoch(secrets.token_hex(8), now)
            epoch = self._epoch
        return Incarnation(f"memory-run-{self._run}", epoch.value, max(0.0, now - epoch.born))

    def close(self) -> None:
        """Nothing to release."""

    # -- inside --------------------------------------------------------------------------

    def _left(self, identity: str, now: float) -> float | None:
        """Seconds ``identity``'s record has left; a lapsed record is dropped, as Redis does."""
        record = self._records.get(identity)
        if record is None:
            return None
        if record.expires_at <= now:
            del self._records[identity]
            return None
        return record.expires_at - now

    def _check_up(self) -> None:
        if self.down:
            raise LivenessUnavailable("the in-memory liveness backend is down (the test said so)")
