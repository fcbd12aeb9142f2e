"""A real RQ worker whose jobs are recorded through jobledger; killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from jobledger.identity import parse
from jobledger.integrations.rq import LedgerQueue
from jobledger.testing import RedisServer
from tests.faults.conftest import ROOT, TTL, FaultEnv

RQ = Path(sys.executable).parent / "rq"


def _rq_worker(env: FaultEnv, *extra: str) -> subprocess.Popen[str]:
    assert env.redis is not None
    settings = {
        "JOBLEDGER_DATABASE_URL": env.database_url,
        "JOBLEDGER_REDIS_URL": env.redis.url,
        "JOBLEDGER_TTL": str(TTL),
        "PYTHONPATH": str(ROOT),
    }
    args = [str(RQ), "worker", "--url", env.redis.url, *extra]
    args += ["--worker-class", "jobledger.integrations.rq.LedgerWorker", "jl"]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **settings},
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def rq_env(redis_env: FaultEnv) -> Iterator[tuple[FaultEnv, redis.Redis, LedgerQueue]]:
    assert isinstance(redis_env.redis, RedisServer)
    connection = redis.Redis.from_url(redis_env.redis.url)
    # The adapter's liveness uses the default prefix; so must the projector.
    redis_env.prefix = "jobledger"
    queue = LedgerQueue("jl", connection=connection, ledger=redis_env.ledger)
    yield redis_env, connection, queue
    connection.close()


def test_rq_jobs_are_recorded_by_the_work_horse(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue],
) -> None:
    env, _, queue = rq_env
    ok = queue.enqueue("tests.faults.rq_jobs.quick", 21)
    bad = queue.enqueue("tests.faults.rq_jobs.broken")
    worker = _rq_worker(env, "--burst")
    assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""
    assert env.types(ok.id) == ["enqueued", "claimed", "completed"]
    assert env.types(bad.id) == ["enqueued", "claimed", "failed"]
    assert "this job always fails" in (env.ledger.status(bad.id).last_error or "")
    horse = parse(env.ledger.history(ok.id)[1].process or "")
    assert horse.pid != worker.pid  # the horse, a forked child, holds the claim


def test_killed_rq_worker_and_horse_are_recovered_while_rq_says_started(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue],
) -> None:
    env, connection, queue = rq_env
    projector = env.projector()
    job = queue.enqueue("tests.faults.rq_jobs.slow", 120)
    worker = _rq_worker(env)
    env.wait_for(lambda: env.ledger.status(job.id).state == "claimed", timeout=30)
    horse = parse(env.ledger.status(job.id).claimed_by or "")
    time.sleep(TTL)  # let the claim age past the grace period

    os.kill(worker.pid, signal.SIGKILL)
    os.kill(horse.pid, signal.SIGKILL)  # the horse has its own process group: kill it too
    killed_at = time.monotonic()
    worker.wait()

    env.wait_for(lambda: env.ledger.status(job.id).state != "claimed", timeout=TTL + 5)
    assert time.monotonic() - killed_at <= TTL + 2
    history = env.ledger.history(job.id)
    assert [e.type for e in history][:3] == ["enqueued", "claimed", "abandoned"]
    assert history[2].data["holder"] == str(horse)
    assert projector.counters.abandoned == 1
    # RQ itself still believes the job is running.
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.STARTED
    assert job.id in StartedJobRegistry("jl", connection=connection).get_job_ids()
