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
from collections.abc import Iterator, Sequence
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
    "RedisClusterServers",
    "RedisSentinelServers",
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

    def __init__(
        self, port: int | None = None, password: str | None = None, config: Sequence[str] = ()
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (needed for RedisServer)")
        self.binary = binary
        self.port = port or free_port()
        #: With a password, clients must AUTH (``redis://:PASSWORD@...``, encoded or not).
        self.password = password
        #: More redis.conf lines, e.g. ``cluster-enabled yes``.
        self.config = list(config)
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
        lines = list(self.config)
        if self.password is not None:
            lines.append(f"requirepass {_quoted(self.password)}")
        self.process.stdin.write("".join(f"{line}\n" for line in lines).encode())
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


class RedisClusterServers:
    """A private Redis Cluster: ``masters`` ``redis-server --cluster-enabled yes`` on free ports,
    each with ``replicas`` replicas.

    Nothing on disk but each node's cluster configuration, so a restarted node rejoins
    with its slots and no keys. Needs ``redis-server`` and ``redis-cli`` on PATH.
    """

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                config=[
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {node_timeout_ms}",
                    # Its own free port: the default (port + 10000) may be taken or above 65535.
                    f"cluster-port {free_port()}",
                    "repl-diskless-sync-delay 0",  # a replica syncs now, not 5 s later
                ]
            )
            for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 20.0) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            create = ["redis-cli", "--cluster", "create", *addresses]
            create += ["--cluster-replicas", str(self.replicas)]
            subprocess.run(
                [*create, "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
            )
            self.wait_until_ok(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def wait_until_ok(self, timeout: float = 20.0) -> None:
        """Wait until every node says ``cluster_state:ok`` and serves all slots."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_cluster_ok(node.port) for node in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def holder_of(self, key: str) -> RedisServer:
        """The master whose slots include ``key``'s."""
        slot = int(_cli(self.nodes[0].port, "CLUSTER", "KEYSLOT", key))
        for node in self.nodes:
            for span in _myself(node.port)[8:]:
                first, _, last = span.partition("-")
                if first.isdecimal() and int(first) <= slot <= int(last or first):
                    return node
        raise RuntimeError(f"no node serves slot {slot}")

    def fail_over(self, key: str, timeout: float = 20.0) -> RedisServer:
        """``CLUSTER FAILOVER`` on a replica of ``key``'s master: a manual failover, which waits
        for the replica to catch up first; the new master, once the cluster is ok again."""
        master = self.holder_of(key)
        master_id = _myself(master.port)[0]
        replica = next(node for node in self.nodes if _myself(node.port)[3] == master_id)
        deadline = time.monotonic() + timeout
        while not _in_sync_replica(replica.port, master.port):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica never caught up with its master")
            time.sleep(0.05)
        _cli(replica.port, "CLUSTER", "FAILOVER")
        while self.holder_of(key) is not replica:
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster failover did not finish")
            time.sleep(0.05)
        self.wait_until_ok(max(0.1, deadline - time.monotonic()))
        return replica

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisSentinelServers:
    """A private master, one replica and one sentinel watching them as ``service``."""

    def __init__(self, service: str = "jobledger", down_after_ms: int = 1000) -> None:
        self.service = service
        at_once = "repl-diskless-sync-delay 0"  # a replica syncs now, not 5 s later
        self.master = RedisServer(config=[at_once])
        self.replica = RedisServer(config=[at_once, f"replicaof 127.0.0.1 {self.master.port}"])
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jobledger-sentinel-"))
        self.config = self.dir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 10000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def start(self, timeout: float = 20.0) -> RedisSentinelServers:
        try:
            self.master.start()
            self.replica.start()
            self.process = subprocess.Popen(
                [self.master.binary, str(self.config), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._wait_for_replica(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def master_port(self) -> int:
        """The port of the master the sentinel names now."""
        return int(_cli(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service).split()[1])

    def failover(self, timeout: float = 30.0) -> None:
        """``SENTINEL FAILOVER``, then wait until the replica is the master and the old one its
        replica, in sync (Sentinel demotes the old master about 8 s after the promotion)."""
        before = self.master_port()
        deadline = time.monotonic() + timeout
        # Refused (NOGOODSLAVE) until the sentinel has heard from the replica itself.
        while _cli(self.port, "SENTINEL", "FAILOVER", self.service) != "OK":
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel refused to fail over")
            time.sleep(0.1)
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.SubprocessError, ValueError, IndexError):
                now = self.master_port()
                if now != before and _in_sync_replica(before, now):
                    return
            time.sleep(0.05)
        raise RuntimeError("the Sentinel failover did not finish")

    def _wait_for_replica(self, timeout: float) -> None:
        """Until the replica is in sync and the sentinel knows it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.SubprocessError):
                replicas = _cli(self.port, "SENTINEL", "REPLICAS", self.service)
                if str(self.replica.port) in replicas and _in_sync_replica(
                    self.replica.port, self.master.port
                ):
                    return
            time.sleep(0.05)
        raise RuntimeError("the sentinel never saw the replica")

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        self.replica.close()
        self.master.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisSentinelServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cli(port: int, *command: str) -> str:
    """One command through ``redis-cli`` to 127.0.0.1:``port``, its reply as text."""
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.stdout.strip()


def _myself(port: int) -> list[str]:
    """The fields of the ``myself`` line of ``CLUSTER NODES`` on ``port``: id, address, flags,
    master id (``-`` for a master), ..., then the slot ranges of a master."""
    lines = _cli(port, "CLUSTER", "NODES").splitlines()
    return next(fields for fields in map(str.split, lines) if "myself" in fields[2])


def _cluster_ok(port: int) -> bool:
    try:
        info = _cli(port, "CLUSTER", "INFO")
    except subprocess.SubprocessError:
        return False
    return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info


def _in_sync_replica(port: int, master_port: int) -> bool:
    """Whether the server on ``port`` replicates the one on ``master_port``, link up."""
    info = _cli(port, "INFO", "replication")
    return f"master_port:{master_port}" in info and "master_link_status:up" in info
