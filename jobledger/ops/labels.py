"""Label values that stay few: queue names are user data, and every distinct label
value is a time series Prometheus keeps.

The first :data:`DEFAULT_MAX_QUEUES` queue names a process meets keep their own
label; every later one is counted under :data:`OTHER`. Job ids and process
identities are never labels. Escaping label values in the exposition format is
``prometheus_client``'s job.
"""

from __future__ import annotations

import threading

from .. import bounds

#: Distinct queue labels one process exposes; the rest share :data:`OTHER`.
DEFAULT_MAX_QUEUES = 50
#: The label of every queue past the cap (a queue really named ``other`` shares it).
OTHER = "other"


class BoundedLabels:
    """Maps values to at most ``limit`` distinct labels, first come first kept, plus ``other``."""

    def __init__(self, limit: int = DEFAULT_MAX_QUEUES) -> None:
        self.limit = bounds.count(limit, "the label limit", minimum=0)
        self._kept: set[str] = set()
        self._lock = threading.Lock()  # hooks run in the projector's and redeliverer's threads

    def __call__(self, value: str) -> str:
        """``value`` itself if it has (or now gets) a label of its own, else :data:`OTHER`."""
        with self._lock:
            if value in self._kept:
                return value
            if len(self._kept) < self.limit:
                self._kept.add(value)
                return value
            return OTHER

    @property
    def kept(self) -> frozenset[str]:
        """The values that have a label of their own."""
        with self._lock:
            return frozenset(self._kept)

    @property
    def full(self) -> bool:
        """Whether every new value from now on is :data:`OTHER`."""
        with self._lock:
            return len(self._kept) >= self.limit
