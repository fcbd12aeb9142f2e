"""/healthz turns 503 while a sweep hangs and 200 once it returns, over real HTTP."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Collection

from prometheus_client import CollectorRegistry

from jobledger import Ledger, RecoveryProjector
from jobledger.liveness import MemoryLiveness
from jobledger.observers import Observers
from jobledger.ops import Health, RecoveryMetrics, serve
from tests.helpers import wait_for


class Hanging(MemoryLiveness):
    """Answers ``remaining`` only while ``flowing`` is set: a backend call that hangs."""

    def __init__(self) -> None:
        super().__init__(ttl=1.0)
        self.flowing = threading.Event()
        self.flowing.set()

    def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        self.flowing.wait()
        return super().remaining(identities)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_a_hung_sweep_fails_the_liveness_probe(sqlite_ledger: Ledger) -> None:
    liveness = Hanging()
    registry = CollectorRegistry()
    health = Health(stall_after=0.5)
    observer = Observers([RecoveryMetrics(registry), health])
    recovery = RecoveryProjector(
        sqlite_ledger, liveness, interval=0.1, handle_signals=False, observer=observer
    )
    server = serve("127.0.0.1", 0, registry, health)
    loop = threading.Thread(target=recovery.run_forever)
    loop.start()
    try:
        wait_for(lambda: _status(f"{server.url}/readyz") == 200, timeout=10)
        assert _status(f"{server.url}/healthz") == 200
        liveness.flowing.clear()  # the next sweep hangs in the backend
        wait_for(lambda: _status(f"{server.url}/healthz") == 503, timeout=10)
        assert _status(f"{server.url}/readyz") == 503
        assert _status(f"{server.url}/metrics") == 200  # scrapes never wait for the loop
        liveness.flowing.set()
        wait_for(lambda: _status(f"{server.url}/healthz") == 200, timeout=10)
        wait_for(lambda: _status(f"{server.url}/readyz") == 200, timeout=10)
        assert _status(f"{server.url}/elsewhere") == 404
    finally:
        liveness.flowing.set()
        recovery.stop()
        loop.join(timeout=10)
        server.stop()
