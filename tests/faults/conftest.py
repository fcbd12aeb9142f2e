"""Real processes, real signals, a private redis-server the tests may kill and restart."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobledger import Ledger, RecoveryProjector, RedisLiveness, SqlLiveness
from jobledger.liveness import Liveness
from jobledger.testing import RedisServer
from tests.conftest import service_missing, truncate_all
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
TTL = 1.0


class WorkerProcess:
    """A ``tests.faults.worker_process`` child, with its stdout lines readable with a timeout."""

    def __init__(self, args: list[str], module: str = "tests.faults.worker_process") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def expect(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            if line["event"] == event:
                return line
        raise AssertionError(f"worker never said {event!r}; stderr:\n{''.join(self.stderr)}")

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


class FaultEnv:
    """A ledger database, a liveness backend of one kind, and the processes of one test."""

    def __init__(
        self,
        kind: str,
        database_url: str,
        redis: RedisServer | None,
        redis_url: str | None = None,
    ) -> None:
        """``redis``: the server tests may restart; ``redis_url``: where liveness lives, if not
        there (a cluster whose node ``redis`` is, a Sentinel service)."""
        self.kind, self.database_url, self.redis = kind, database_url, redis
        self.redis_url = redis_url or (redis.url if redis is not None else None)
        self.ledger = Ledger(database_url)
        self.prefix = "faults"
        self.workers: list[WorkerProcess] = []
        self.projectors: list[tuple[RecoveryProjector, threading.Thread]] = []

    def liveness(self, ttl: float = TTL) -> Liveness:
        if self.redis_url is not None:
            return RedisLiveness(self.redis_url, ttl=ttl, prefix=self.prefix, socket_timeout=0.5)
        return SqlLiveness(self.ledger, ttl=ttl)

    def worker(self, jobs: list[str], *extra: str, ttl: float = TTL) -> WorkerProcess:
        args = ["--database-url", self.database_url, "--ttl", str(ttl), "--claim", ",".join(jobs)]
        if self.redis_url is not None:
            args += ["--redis-url", self.redis_url, "--prefix", self.prefix]
        started = WorkerProcess(args + list(extra))
        self.workers.append(started)
        return started

    def async_worker(self, job: str, *extra: str, ttl: float = TTL) -> WorkerProcess:
        """A ``tests.faults.aio_worker_process`` child (an AsyncWorker) claiming ``job``."""
        args = ["--database-url", self.database_url, "--ttl", str(ttl), "--claim", job]
        if self.redis is not None:
            args += ["--redis-url", self.redis.url, "--prefix", self.prefix]
        started = WorkerProcess(args + list(extra), "tests.faults.aio_worker_process")
        self.workers.append(started)
        return started

    def projector(self, ttl: float = TTL, **options: Any) -> RecoveryProjector:
        """A recovery projector sweeping every 0.2 s in a background thread."""
        made = RecoveryProjector(
            self.ledger, self.liveness(ttl), interval=0.2, handle_signals=False, **options
        )
        thread = threading.Thread(target=made.run_forever)
        thread.start()
        self.projectors.append((made, thread))
        return made

    wait_for = staticmethod(wait_for)

    def settled(self, projector: RecoveryProjector) -> None:
        """Wait for the sweep under way to finish: it counts what it ended only after its
        commits, so a state seen in the database can be ahead of the counters."""
        before = projector.counters.sweeps
        wait_for(lambda: projector.counters.sweeps > before, timeout=5)

    def types(self, job_id: str) -> list[str]:
        return [e.type for e in self.ledger.history(job_id)]

    def close(self) -> None:
        for projector, thread in self.projectors:
            projector.stop()
            thread.join(timeout=10)
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.signal(signal.SIGCONT)
            worker.kill()
        self.ledger.close()


def private_redis() -> RedisServer:
    """A redis-server of the test's own, or a skip (a failure in CI) if there is none."""
    if shutil.which("redis-server") is None:
        service_missing("redis-server (for a private Redis)", "not installed")
    return RedisServer().start()


@pytest.fixture(params=["redis-postgresql", "sql-sqlite"])
def fault_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultEnv]:
    """Redis liveness with PostgreSQL, or the embedded default: SQL leases in SQLite."""
    if request.param == "redis-postgresql":
        url: str = request.getfixturevalue("postgres_url")
        truncate_all(url)
        redis = private_redis()
    else:
        shutil.copy(request.getfixturevalue("sqlite_template"), tmp_path / "ledger.db")
        url, redis = f"sqlite:///{tmp_path / 'ledger.db'}", None
    env = FaultEnv(request.param, url, redis)
    yield env
    env.close()
    if redis is not None:
        redis.close()


@pytest.fixture
def redis_env(request: pytest.FixtureRequest) -> Iterator[FaultEnv]:
    """Redis liveness (private server) with PostgreSQL only."""
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    redis = private_redis()
    env = FaultEnv("redis-postgresql", url, redis)
    yield env
    env.close()
    redis.close()


@pytest.fixture
def sqlite_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultEnv]:
    """The embedded default only: SQL leases with a SQLite ledger."""
    shutil.copy(request.getfixturevalue("sqlite_template"), tmp_path / "ledger.db")
    env = FaultEnv("sql-sqlite", f"sqlite:///{tmp_path / 'ledger.db'}", None)
    yield env
    env.close()
