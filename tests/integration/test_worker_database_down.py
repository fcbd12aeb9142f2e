"""A Worker whose database refuses connections still stops cleanly and stops looking alive."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from jobledger import Ledger, RecoveryProjector, RedisLiveness, Worker
from jobledger.database import engine_for
from jobledger.testing import scratch_database


def _allow_connections(server_url: str, database: str, allowed: bool) -> None:
    admin = engine_for(server_url)
    with admin.begin() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
    admin.dispose()


@pytest.fixture
def liveness(redis_url: str) -> Iterator[RedisLiveness]:
    made = RedisLiveness(redis_url, ttl=1.0, prefix=f"jobledger-test-{secrets.token_hex(6)}")
    born = int(time.time() * 1000) - 3_600_000  # a Redis life an hour old, as in production
    made.client.set(made._epoch, f"settled@{born}")
    yield made
    made.client.delete(made._epoch, made._registry)
    made.close()


def test_stop_with_the_database_refusing_connections(
    postgres_server_url: str, liveness: RedisLiveness
) -> None:
    with scratch_database(postgres_server_url) as url, Ledger(url) as ledger:
        ledger.migrate()
        ledger.enqueue("j")
        worker = Worker(ledger, liveness).start()
        worker.claim("j")
        database = str(url.database)
        _allow_connections(postgres_server_url, database, allowed=False)
        try:
            worker.stop(timeout=0)  # the release fails: logged, not raised
            assert not liveness.alive([worker.identity])[worker.identity]
            time.sleep(1.5 * liveness.ttl)  # a refresh thread still running would revive nothing
            assert not liveness.alive([worker.identity])[worker.identity]
            again = threading.Thread(target=worker.stop)
            again.start()
            again.join(timeout=5)
            assert not again.is_alive()  # stop() is idempotent, never blocks
        finally:
            _allow_connections(postgres_server_url, database, allowed=True)
        assert ledger.status("j").claimed_by == worker.identity  # its release never happened
        projector = RecoveryProjector(ledger, liveness, grace=0)
        (recovery,) = projector.run_once()
        assert recovery.holder == worker.identity
        assert ledger.status("j").state == "enqueued"
