"""When a missing liveness record may be read as a death.

Right after a liveness backend restarts, fails over or is flushed, every live
process's record is missing until that process's next refresh (up to TTL/3
later, and a refresh that finds its record gone re-registers). For one TTL
after such a change a missing record therefore proves nothing, and whoever
would act on it (the recovery projector's sweep, a worker taking over a
redelivered job) must wait. Both ask the same :class:`LifeWatch`, so both
follow one rule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..observers import LIVENESS_RESTARTED
from .base import Incarnation

log = logging.getLogger("jobledger.liveness")


class LifeWatch:
    """Follows a backend's incarnations and says whether its lapses can be believed now."""

    def __init__(
        self,
        ttl: float,
        pausing: str = "pausing abandonment",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.pausing = pausing  # what doubt stops, for the log line
        self._clock = clock
        self._seen: Incarnation | None = None
        self._doubt_until = 0.0  # by self._clock
        #: Why lapses are (or were last) not believed: one of :data:`jobledger.observers.PAUSES`.
        self.cause = LIVENESS_RESTARTED
        self._lock = threading.Lock()

    def trusts(self, now: Incarnation) -> bool:
        """Note the backend's current incarnation; whether a missing record means death.

        The first look trusts a backend whose life began at least one TTL ago;
        any change of life afterwards brings one TTL of doubt.
        """
        with self._lock:
            before, self._seen = self._seen, now
            if before is None:
                if now.age is not None and now.age < self.ttl:
                    self.doubt(
                        f"the liveness backend started or was flushed {now.age:.1f}s ago",
                        self.ttl - now.age,
                    )
            elif not before.same_life(now):
                self.doubt(
                    "the liveness backend restarted, failed over or was flushed "
                    "(run id or epoch changed)"
                )
            return self._clock() >= self._doubt_until

    def doubt(
        self, why: str, seconds: float | None = None, *, cause: str = LIVENESS_RESTARTED
    ) -> None:
        """Believe no lapse for ``seconds`` (default one TTL) from now, and say why
        (``cause``: the same, as a short name for metrics)."""
        seconds = self.ttl if seconds is None else seconds
        until = self._clock() + seconds
        if until >= self._doubt_until:  # the doubt that lasts longest names the pause
            self._doubt_until = until
            self.cause = cause
        log.warning("%s for %.1fs: %s", self.pausing, seconds, why)

    @property
    def doubting(self) -> bool:
        """Whether lapses are not believed right now."""
        return self._clock() < self._doubt_until
