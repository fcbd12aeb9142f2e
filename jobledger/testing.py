"""Helpers for testing code that uses jobledger (and for jobledger's own suite).

Most start and stop *real* services: a scratch PostgreSQL database on a server
you name, and a private ``redis-server`` on a free port. For tests that must
not wait out real TTLs, :class:`ManualClock` drives a
:class:`~jobledger.liveness.MemoryLiveness` and a recovery projector
(``RecoveryProjector(..., clock=clock)``) by hand.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from .database import parse_url
from .liveness.memory import MemoryLiveness

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "DEFAULT_REDIS_URL",
    "ManualClock",
    "MemoryLiveness",
    "RedisServer",
    "free_port",
    "postgres_available",
    "scratch_database",
]


class ManualClock:
    """A monotonic clock that moves only when told to: pass it where ``time.monotonic`` goes."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (never back: it stands for a monotonic clock)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock never goes back ({seconds!r} s)")
        self.now += seconds


def postgres_available(url: str | URL) -> str | None:
    """``None`` if a PostgreSQL server answers at ``url``, else why not."""
    engine = create_engine(parse_url(url), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not available"; the reason is reported
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()
    return None


@contextlib.contextmanager
def scratch_database(server_url: str | URL, prefix: str = "jobledger_test") -> Iterator[URL]:
    """Create a uniquely named database on ``server_url``'s server; drop it afterwards."""
    admin_url = parse_url(server_url)
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private, disposable ``redis-server`` that tests may stop, restart and flush.

    It keeps nothing on disk, so a restart comes back empty, as after a crash of a
    cache-only Redis. Needs the ``redis-server`` binary on PATH.
    """

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (needed for RedisServer)")
        self.binary = binary
        self.port = port or free_port()
        #: With a password, clients must AUTH (``redis://:PASSWORD@...``, encoded or not).
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="jobledger-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        # The configuration also comes on stdin ("-"): a password there stays out of ps.
        self.process = subprocess.Popen(
            [*args[:1], "-", *args[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None
        if self.password is not None:
            self.process.stdin.write(f"requirepass {_quoted(self.password)}\n".encode())
        self.process.stdin.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quoted(value: str) -> str:
    """``value`` as a double-quoted string of redis.conf."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
