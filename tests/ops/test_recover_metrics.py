"""``jobledger recover --metrics-port``: a real projector, a real worker SIGKILLed, scraped."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis as redis_py
from rq import Queue

from jobledger import Ledger
from jobledger.testing import RedisServer
from tests.faults.conftest import WorkerProcess
from tests.helpers import wait_for
from tests.ops.conftest import Recover

TTL = "1"


def _settle(server: RedisServer) -> None:
    """A Redis whose life began an hour ago, as in production (a new one pauses for a TTL)."""
    client = redis_py.Redis.from_url(server.url)
    born = int(time.time() * 1000) - 3_600_000
    client.set("{jobledger}:epoch", f"settled@{born}", nx=True)
    client.close()


@pytest.fixture
def started(pg_url: str, redis_server: RedisServer) -> Iterator[tuple[Recover, Ledger]]:
    _settle(redis_server)
    recover = Recover(
        "--database-url", pg_url, "--redis-url", redis_server.url,
        "recover", "--ttl", TTL, "--interval", "0.2", "--metrics-port", "0",
        "--metrics-interval", "0.3", "--redeliver", "rq",
    )  # fmt: skip
    ledger = Ledger(pg_url)
    yield recover, ledger
    recover.stop()
    ledger.close()


def test_counters_move_when_a_worker_is_killed(
    started: tuple[Recover, Ledger], pg_url: str, redis_server: RedisServer
) -> None:
    recover, ledger = started
    assert recover.get("/healthz") == (200, "running\n")
    wait_for(lambda: recover.get("/readyz")[0] == 200, timeout=10)
    jobs = ["metrics-1", "metrics-2"]
    ledger.enqueue_many(jobs, queue="mail")
    rq_queue = Queue("mail", connection=redis_py.Redis.from_url(redis_server.url))
    for job_id in jobs:  # the jobs RQ knows, for the redeliverer to hand back
        rq_queue.enqueue("os.getpid", job_id=job_id)
    worker = WorkerProcess([
        "--database-url", pg_url, "--ttl", TTL, "--claim", ",".join(jobs),
        "--redis-url", redis_server.url, "--prefix", "jobledger",
    ])  # fmt: skip
    try:
        worker.expect("claimed")
        wait_for(lambda: recover.value("jobledger_recovery_holders", state="alive") == 1, 10)
        wait_for(lambda: recover.value("jobledger_jobs", queue="mail", state="claimed") == 2, 20)
        assert recover.value("jobledger_recovery_abandoned_total", queue="mail") == 0
        worker.kill()  # SIGKILL: its claims stay until the projector ends them

        wait_for(lambda: recover.value("jobledger_recovery_requeued_total", queue="mail") == 2, 15)
    finally:
        worker.kill()
    seen = recover.metrics()
    for name in ("orphans_found", "abandoned", "requeued"):
        assert seen[(f"jobledger_recovery_{name}_total", frozenset({("queue", "mail")}))] == 2
    assert ("jobledger_recovery_left_abandoned_total", frozenset({("queue", "mail")})) not in seen
    assert seen[("jobledger_recovery_detection_latency_seconds_count", frozenset())] == 2
    assert seen[("jobledger_recovery_sweeps_total", frozenset({("outcome", "ok")}))] > 5
    assert seen[("jobledger_recovery_sweep_duration_seconds_count", frozenset())] > 5
    for job_id in jobs:
        assert [e.type for e in ledger.history(job_id)][-2:] == ["abandoned", "requeued"]
    # The redeliverer hands both back to RQ; the gauges follow the ledger.
    wait_for(lambda: recover.value("jobledger_redelivered_total", queue="mail") == 2, 10)
    wait_for(lambda: recover.value("jobledger_jobs", queue="mail", state="enqueued") == 2, 20)
    wait_for(lambda: recover.value("jobledger_recovery_holders", state="dead") == 0, 10)
    lag = recover.metrics()
    for projection in ("queue_stats", "redelivery:rq"):
        assert ("jobledger_catchup_lag_events", frozenset({("projection", projection)})) in lag
        assert ("jobledger_catchup_lag_seconds", frozenset({("projection", projection)})) in lag
    # No job id and no process identity ever became a label.
    labels = {value for (_, pairs) in lag for _, value in pairs}
    assert not labels & set(jobs)
    assert not any(":" in value and value != "redelivery:rq" for value in labels)


def test_readyz_follows_redis(started: tuple[Recover, Ledger], redis_server: RedisServer) -> None:
    recover, _ = started
    wait_for(lambda: recover.get("/readyz") == (200, "ready\n"), timeout=10)

    redis_server.stop()
    wait_for(lambda: recover.get("/readyz")[0] == 503, timeout=10)
    assert recover.get("/readyz") == (503, "last sweep: liveness_unreachable\n")
    assert recover.get("/healthz") == (200, "running\n")  # backing off is still running
    paused = ("jobledger_recovery_paused", "liveness_unreachable")
    assert recover.value(paused[0], reason=paused[1]) == 1
    assert recover.value("jobledger_recovery_paused_sweeps_total", reason=paused[1]) >= 1

    redis_server.start()  # empty: a new life, so the projector doubts lapses for one TTL
    wait_for(lambda: recover.get("/readyz")[0] == 200, timeout=40)
    assert recover.value("jobledger_recovery_paused_sweeps_total", reason="liveness_restarted") >= 1
    assert recover.value(paused[0], reason=paused[1]) == 0
    assert recover.get("/healthz")[0] == 200
    recover.process.terminate()  # SIGTERM: the sweep, the server and the refreshes end
    assert recover.process.wait(timeout=15) == 0
