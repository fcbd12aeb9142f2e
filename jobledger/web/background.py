"""Work the web view does beside its requests: queue figures kept current, verify rerun.

Requests never write and never start heavy work, so anything a page shows that
costs more than an indexed read is prepared here, in daemon threads:

- a :class:`~jobledger.catchup.CatchUp` runner keeps the ``queue_stats`` projection
  current (the overview reads it instead of counting a million rows). It writes
  only that read model and its checkpoint, exactly as ``jobledger queues`` does;
  ``jobledger web --no-catch-up`` leaves it to another process (e.g. for a
  read-only database role) and the overview says how far behind the figures are.
- :class:`VerifyWatch` runs ``verify`` in this process (no forked workers: forking a
  threaded server is unsafe) every ``interval`` seconds and keeps the last report.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ..audit import VerifyReport
from ..catchup import CatchUp
from ..errors import LedgerError
from ..ledger import Ledger
from ..stats import QueueStats

log = logging.getLogger("jobledger.web")


@dataclass(frozen=True)
class VerifyRun:
    """One finished run of verify: when, how long, and what it found (or why it failed)."""

    started_at: datetime
    seconds: float
    report: VerifyReport | None
    error: str | None = None


class VerifyWatch:
    """Runs verify now and every ``interval`` seconds (never, if ``interval`` is 0)."""

    def __init__(self, ledger: Ledger, interval: float) -> None:
        self.ledger = ledger
        self.interval = interval
        self.last: VerifyRun | None = None
        self.running_since: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="jobledger-web-verify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> VerifyRun:
        started, clock = datetime.now(timezone.utc), time.monotonic()
        self.running_since = started
        try:
            run = VerifyRun(started, 0.0, self.ledger.verify(workers=1))
        except LedgerError as exc:
            run = VerifyRun(started, 0.0, None, str(exc))
        run = VerifyRun(run.started_at, time.monotonic() - clock, run.report, run.error)
        self.last, self.running_since = run, None
        return run

    def _loop(self) -> None:
        while not self._stop.is_set():
            run = self.run_once()
            if run.error is not None:
                log.warning("verify failed: %s", run.error)
            self._stop.wait(self.interval)


class StatsCatchUp:
    """Keeps ``queue_stats`` current from a daemon thread, until :meth:`stop`."""

    def __init__(self, ledger: Ledger, poll_interval: float = 1.0) -> None:
        self.runner = CatchUp(ledger, QueueStats(), poll_interval=poll_interval)
        self._thread = threading.Thread(target=self._run, name="jobledger-web-stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.runner.stop()

    def _run(self) -> None:
        while not self.runner.stopping:
            try:
                self.runner.run_forever()
            except LedgerError as exc:  # the database went away: try again shortly
                log.warning("queue statistics: %s", exc)
                time.sleep(self.runner.poll_interval)
