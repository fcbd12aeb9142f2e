"""Keeping one process's liveness record alive while it works.

The record is refreshed from a daemon thread every TTL/3, so job code that hogs
the main thread for minutes cannot make a live process look dead. When a
refresh finds the record gone, one of two things happened. If the last
successful refresh is older than the TTL (by this process's monotonic clock:
it was paused, swapped out or partitioned), it may have been presumed dead: it
says so loudly, stops claiming, and lets fencing refuse its stale writes. If the
last refresh was recent, the backend lost the record (restart, failover,
flush): it re-registers at once. While the backend is unreachable the thread
keeps retrying and never dies: a dead refresher would mean a false death.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import LedgerError, LivenessUnavailable
from .liveness.base import Incarnation, Liveness, ProcessInfo
from .liveness.trust import LifeWatch

log = logging.getLogger("jobledger.presence")


class Presence:
    """One process's liveness record, kept alive from a daemon thread until :meth:`leave`.

    ``describe`` is asked for the record's contents at every refresh; ``watch``
    learns of every incarnation of the backend seen here.
    """

    def __init__(
        self, liveness: Liveness, describe: Callable[[], ProcessInfo], watch: LifeWatch
    ) -> None:
        self.liveness = liveness
        self._describe = describe
        self._watch = watch
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._last_refresh = 0.0  # time.monotonic() of the last successful refresh
        self._incarnation: Incarnation | None = None
        self._presumed_dead = False

    @property
    def presumed_dead(self) -> bool:
        """True once the record lapsed because this process was silent longer than the TTL."""
        return self._presumed_dead

    @property
    def running(self) -> bool:
        """Whether the refresh thread runs (between :meth:`enter` and :meth:`leave`)."""
        return self._thread is not None

    def enter(self) -> None:
        """Register and start refreshing; ``LivenessUnavailable`` if it cannot register."""
        info = self._describe()
        self.liveness.register(info)
        self._incarnation = self.liveness.incarnation()
        self._watch.trusts(self._incarnation)
        self._last_refresh = time.monotonic()
        self._thread = threading.Thread(
            target=self._refresh_forever, name=f"jobledger-refresh-{info.pid}", daemon=True
        )
        self._thread.start()

    def publish(self) -> None:
        """Refresh now, not at the next turn: the record's contents changed."""
        self._wake.set()

    def leave(self, identity: str) -> None:
        """Stop refreshing and unregister; a failure is logged (the record then lapses)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wake.set()
            thread.join(timeout=10)
        try:
            self.liveness.unregister(identity)
        except LedgerError as exc:
            log.warning("worker %s could not unregister (its record will lapse): %s", identity, exc)

    def _refresh_forever(self) -> None:
        interval = self.liveness.ttl / 3
        outage_logged = False
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            if self._thread is None:
                return
            info = self._describe()
            try:
                self._refresh_once(info)
            except LivenessUnavailable as exc:
                if not outage_logged:
                    log.warning(
                        "worker %s cannot refresh (will keep trying): %s", info.identity, exc
                    )
                outage_logged = True
                continue
            except Exception:  # the thread must never die: a dead refresher means false death
                log.exception("worker %s: unexpected error while refreshing", info.identity)
                continue
            if outage_logged:
                log.warning("worker %s: liveness backend reachable again", info.identity)
                outage_logged = False

    def _refresh_once(self, info: ProcessInfo) -> None:
        if self._presumed_dead:
            return
        # Our silence ends when we try: time spent waiting for a slow or locked store is the
        # store's, and must not make us presume ourselves dead (fencing covers the rest).
        attempted = time.monotonic()
        if self.liveness.refresh(info):
            self._last_refresh = time.monotonic()
            return
        # Our record is gone. Either the backend forgot it (restart, failover, flush), or it
        # lapsed because we were silent too long (paused, swapped out, partitioned).
        silent_for = attempted - self._last_refresh
        now = self.liveness.incarnation()
        forgot = self._incarnation is None or not now.same_life(self._incarnation)
        if silent_for <= self.liveness.ttl or forgot:
            cause = "the backend restarted or was flushed" if forgot else "the backend lost it"
            log.warning(
                "worker %s: liveness record vanished (%s); re-registering", info.identity, cause
            )
            self.liveness.register(info)
            self._incarnation = self.liveness.incarnation()
            self._watch.trusts(self._incarnation)
            self._last_refresh = time.monotonic()
            return
        self._presumed_dead = True
        log.error(
            "worker %s was silent for %.1fs (TTL %.1fs) and its record lapsed: it is presumed "
            "dead, its claims may be abandoned and its writes to them refused; not claiming",
            info.identity,
            silent_for,
            self.liveness.ttl,
        )
