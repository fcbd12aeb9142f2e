"""Shared fixtures: real SQLite files, a scratch PostgreSQL database, real Redis.

Tests that need PostgreSQL or Redis skip (and say why) when the service is
absent, unless JOBLEDGER_REQUIRE_SERVICES=1, which turns the skip into a
failure: CI sets it, so a CI run cannot pass with the PostgreSQL tests skipped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from jobledger import Ledger, RedisLiveness, SqlLiveness
from jobledger.database import engine_for
from jobledger.liveness import Liveness
from jobledger.schema import metadata
from jobledger.testing import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    RedisClusterServers,
    postgres_available,
    scratch_database,
)
from tests.aio_facade import Facade, LoopThread

#: A job whose holder died, recovered and run again to the end.
RECOVERED_STORY = ["enqueued", "claimed", "abandoned", "requeued", "claimed", "completed"]

REQUIRE_SERVICES = os.environ.get("JOBLEDGER_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get("JOBLEDGER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
REDIS_URL = os.environ.get("JOBLEDGER_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def service_missing(what: str, why: str) -> None:
    message = f"{what} is not available ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}, and JOBLEDGER_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of a PostgreSQL server the suite may create databases on."""
    why = postgres_available(POSTGRES_URL)
    if why is not None:
        service_missing(f"PostgreSQL at {POSTGRES_URL}", why)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A scratch database for this test session, migrated to head."""
    with scratch_database(postgres_server_url) as url:
        ledger = Ledger(url)
        ledger.migrate()
        ledger.close()
        yield url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    ledger = Ledger(f"sqlite:///{path}")
    ledger.migrate()
    ledger.close()
    return path


@pytest.fixture
def sqlite_ledger(sqlite_template: Path, tmp_path: Path) -> Iterator[Ledger]:
    """A Ledger on a fresh, migrated SQLite file of the test's own."""
    path = tmp_path / "ledger.db"
    path.write_bytes(sqlite_template.read_bytes())
    with Ledger(f"sqlite:///{path}") as ledger:
        yield ledger


def truncate_all(url: str) -> None:
    engine = engine_for(url)
    names = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a fresh SQLite file, or the truncated scratch database."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    return url


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    """A Ledger that records every heartbeat (no throttling), on each backend."""
    with Ledger(database_url, heartbeat_interval=0) as ledger:
        yield ledger


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """One event loop on a thread, shared by a module's tests that drive the async API; gone
    (with its executor's threads) after the module, so later modules may fork safely."""
    loops = LoopThread()
    yield loops
    loops.close()


@pytest.fixture(params=["sync", "async"])
def either_ledger(request: pytest.FixtureRequest, database_url: str) -> Iterator[Any]:
    """The sync Ledger, or an AsyncLedger behind a sync-looking facade (its coroutines
    run on the loop thread): a module that names this its ``ledger`` runs on both."""
    if request.param == "sync":
        with Ledger(database_url, heartbeat_interval=0) as ledger:
            yield ledger
        return
    from jobledger.aio import AsyncLedger

    loops = request.getfixturevalue("loop_thread")

    async def opened() -> AsyncLedger:  # made on the loop: its connections belong there
        return AsyncLedger(database_url, heartbeat_interval=0)

    with Facade(loops.run(opened()), loops) as ledger:
        yield ledger


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis server. Tests must use their own key prefix and never flush it."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at {REDIS_URL}", str(exc))
    finally:
        client.close()
    return REDIS_URL


def cluster_tools_missing() -> None:
    """Skip (fail in CI) where redis-server or redis-cli is not installed."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            service_missing(f"{tool} (for a private Redis Cluster)", "not installed")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A private Redis Cluster for the session: three masters, one replica each. Tests use
    their own prefixes; a fault test may restart a master or fail it over, and leaves the
    cluster ok."""
    cluster_tools_missing()
    # A node timeout well above a restart: a replica must not take over on its own.
    with RedisClusterServers(replicas=1, node_timeout_ms=5000) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisClusterServers) -> str:
    return redis_cluster.url


class Backend:
    """A ledger plus a factory of liveness backends of one kind, cleaned up afterwards."""

    def __init__(self, kind: str, ledger: Ledger, redis_url: str | None) -> None:
        self.kind, self.ledger, self.redis_url = kind, ledger, redis_url
        self.prefix = f"jobledger-test-{secrets.token_hex(6)}"
        self._made: list[Liveness] = []

    def liveness(self, ttl: float = 1.0) -> Liveness:
        made: Liveness
        if self.kind == "redis":
            assert self.redis_url is not None
            made = RedisLiveness(self.redis_url, ttl=ttl, prefix=self.prefix)
            if not self._made:
                # A Redis whose life began an hour ago, as in production; a brand-new epoch
                # would make every projector pause for one TTL first (see test_recovery).
                born = int(time.time() * 1000) - 3_600_000
                made.client.set("{" + self.prefix + "}:epoch", f"settled@{born}", nx=True)
        else:
            made = SqlLiveness(self.ledger, ttl=ttl)
        self._made.append(made)
        return made

    def close(self) -> None:
        for made in self._made:
            if isinstance(made, RedisLiveness):
                keys = list(made.client.scan_iter(match="{" + self.prefix + "}*"))
                if keys:
                    made.client.delete(*keys)
            made.close()
        self.ledger.close()


#: The modules whose ``backend`` tests also run on a Redis Cluster: the liveness contract and
#: recovery. The Worker's own tests ask nothing more of the backend, and the cluster costs time.
CLUSTER_MODULES = {"test_liveness", "test_recovery"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the ``backend[redis-cluster]`` tests of modules not in CLUSTER_MODULES."""
    kept, left_out = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        on_cluster = params is not None and params.params.get("backend") == "redis-cluster"
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        (left_out if on_cluster and module not in CLUSTER_MODULES else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture(params=["redis", "redis-cluster", "sql-sqlite", "sql-postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Redis liveness (ledger on SQLite) on one server or a Redis Cluster, or SQL leases in
    SQLite or PostgreSQL."""
    kind = request.param
    if kind == "sql-postgresql":
        url: str = request.getfixturevalue("postgres_url")
        truncate_all(url)
    else:
        path = tmp_path / "ledger.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    redis_url = {
        "redis": lambda: request.getfixturevalue("redis_url"),
        "redis-cluster": lambda: request.getfixturevalue("redis_cluster_url"),
    }.get(kind, lambda: None)()
    made = Backend("redis" if redis_url else "sql", Ledger(url, heartbeat_interval=0), redis_url)
    yield made
    made.close()
