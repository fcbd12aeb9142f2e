"""A real RQ worker whose jobs are recorded through jobledger; killed mid-job."""

from __future__ import annotations

import json
import os
import queue as queues
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from jobledger import RecoveryPolicy
from jobledger.database import parse_url
from jobledger.errors import RedeliveryFailed
from jobledger.identity import new_identity, parse
from jobledger.integrations.rq import LedgerQueue, RQTarget
from jobledger.redelivery import Redeliverer
from jobledger.testing import RedisServer
from tests.conftest import RECOVERED_STORY
from tests.faults.conftest import ROOT, TTL, FaultEnv
from tests.helpers import alive, children, marker_lines, run_settled, sockets, terminate_cleanly

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


def test_rq_jobs_are_recorded_by_the_rq_worker(
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
    holder = parse(env.ledger.history(ok.id)[1].process or "")
    assert holder.pid == worker.pid  # the RQ worker claims; its forked horse only runs the job


def test_a_horse_killed_alone_fails_its_job_at_once(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue],
) -> None:
    """The worker lives and sees its horse die: the job fails now, as RQ fails it, rather
    than waiting for a liveness record to lapse."""
    env, connection, queue = rq_env
    job = queue.enqueue("tests.faults.rq_jobs.killed")
    after = queue.enqueue("tests.faults.rq_jobs.quick", 1)
    worker = _rq_worker(env, "--burst")
    assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""
    assert env.types(job.id) == ["enqueued", "claimed", "failed"]
    assert "terminated unexpectedly" in (env.ledger.status(job.id).last_error or "")
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.FAILED
    assert env.types(after.id) == ["enqueued", "claimed", "completed"]  # the worker went on
    assert env.ledger.verify().ok


def test_rq_horses_open_no_connection_and_the_worker_keeps_one_session(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue], tmp_path: Path
) -> None:
    """The worker records for its horses over one database session and one Redis
    connection, kept between jobs; a horse only inherits them (and never uses them)."""
    env, _, queue = rq_env
    jobs = [queue.enqueue("tests.faults.rq_jobs.quick", n) for n in range(3)]
    marker, gate = tmp_path / "runs", tmp_path / "gate"
    gated = queue.enqueue("tests.faults.rq_jobs.gated", str(marker), str(gate))
    worker = _rq_worker(env)
    try:
        env.wait_for(lambda: marker_lines(marker) == ["start"], timeout=30)
        horse = _horse_of(worker.pid)
        # The worker's database connections (commands, and the outcome recorded on a thread
        # meanwhile) are the only ones; the horse merely inherited them.
        worker_connections = _database_sockets(worker.pid, env.database_url)
        assert 1 <= len(worker_connections) <= 2
        assert _database_sockets(horse, env.database_url) <= worker_connections
        gate.touch()
        env.wait_for(lambda: env.ledger.status(gated.id).state == "completed", timeout=30)
        env.ledger.close()  # this test's own sessions
        assert 1 <= _other_sessions(env.database_url) <= 2  # commands, and a heartbeat's
        assert worker.poll() is None
    finally:
        gate.touch()
        terminate_cleanly(worker)
    env.wait_for(lambda: _other_sessions(env.database_url) == 0, timeout=10)
    assert [env.types(job.id) for job in [*jobs, gated]] == [
        ["enqueued", "claimed", "completed"]
    ] * 4


def _horse_of(worker_pid: int, timeout: float = 10.0) -> int:
    """The RQ worker's one child process (its work horse), once forked: the worker claims
    the job first, so the claim can be seen a moment before the horse exists."""
    deadline = time.monotonic() + timeout
    while not (found := children(worker_pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (horse,) = found
    return horse


def _database_sockets(pid: int, database_url: str) -> set[str]:
    """The TCP sockets ``pid`` holds open to the database server's port."""
    port = make_url(parse_url(database_url)).port or 5432
    to_database = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:  # the remote address's port
                to_database.add(f"socket:[{fields[9]}]")
    return sockets(pid) & to_database


def _other_sessions(database_url: str) -> int:
    """Sessions on the test's database other than the one asking."""
    engine = create_engine(parse_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            sql = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def test_killed_rq_worker_and_horse_are_recovered_while_rq_says_started(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue],
) -> None:
    env, connection, queue = rq_env
    projector = env.projector()
    job = queue.enqueue("tests.faults.rq_jobs.slow", 120)
    worker = _rq_worker(env)
    env.wait_for(lambda: env.ledger.status(job.id).state == "claimed", timeout=30)
    holder = parse(env.ledger.status(job.id).claimed_by or "")
    assert holder.pid == worker.pid
    horse = _horse_of(worker.pid)
    time.sleep(TTL)  # let the claim age past the grace period

    os.kill(worker.pid, signal.SIGKILL)  # the horse has its own process group; it dies too
    killed_at = time.monotonic()
    worker.wait()
    env.wait_for(lambda: not alive(horse), timeout=2)

    env.wait_for(lambda: env.ledger.status(job.id).state != "claimed", timeout=TTL + 5)
    assert time.monotonic() - killed_at <= TTL + 2
    history = env.ledger.history(job.id)
    assert [e.type for e in history][:3] == ["enqueued", "claimed", "abandoned"]
    assert history[2].data["holder"] == str(holder)
    env.settled(projector)
    assert projector.counters.abandoned == 1
    # RQ itself still believes the job is running.
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.STARTED
    assert job.id in StartedJobRegistry("jl", connection=connection).get_job_ids()


def _recover_cli(env: FaultEnv, *extra: str) -> subprocess.Popen[str]:
    """The real ``jobledger recover`` command, sweeping every 0.2 s."""
    assert env.redis is not None
    settings = {"JOBLEDGER_DATABASE_URL": env.database_url, "JOBLEDGER_REDIS_URL": env.redis.url}
    args = [sys.executable, "-m", "jobledger.cli", "recover", "--ttl", str(TTL)]
    return subprocess.Popen(
        [*args, "--interval", "0.2", *extra],
        cwd=ROOT,
        env={**os.environ, **settings},
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_killed_rq_job_is_redelivered_and_runs_again_on_another_worker(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue], tmp_path: Path
) -> None:
    env, connection, queue = rq_env
    marker = tmp_path / "runs"
    recover = _recover_cli(env, "--redeliver", "rq")  # RQ's Redis: --redis-url by default
    job = queue.enqueue("tests.faults.rq_jobs.counted", str(marker), 120)
    first = _rq_worker(env)
    env.wait_for(lambda: env.ledger.status(job.id).state == "claimed", timeout=30)
    holder_a = parse(env.ledger.status(job.id).claimed_by or "")
    time.sleep(TTL)  # let the claim age past the grace period
    os.kill(first.pid, signal.SIGKILL)  # its horse dies with it
    first.wait()

    # The recover command abandons and requeues it, then hands it back to RQ's queue.
    try:
        env.wait_for(lambda: job.id in queue.get_job_ids(), timeout=TTL + 20)
    except AssertionError:
        recover.kill()
        said = recover.communicate()[1]
        raise AssertionError(f"never redelivered; recover said:\n{said}") from None
    assert env.types(job.id) == ["enqueued", "claimed", "abandoned", "requeued"]
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.QUEUED

    second = _rq_worker(env, "--burst")
    assert second.wait(timeout=60) == 0, second.stderr.read() if second.stderr else ""
    stderr = terminate_cleanly(recover)
    assert "redelivered to rq" in stderr

    history = env.ledger.history(job.id)
    assert [e.type for e in history] == RECOVERED_STORY
    holder_b = parse(history[4].process or "")
    assert holder_a.pid == first.pid
    assert holder_b.pid == second.pid
    assert marker_lines(marker) == ["start", "start", "done"]  # killed once, completed once
    # RQ's own registries agree: finished, neither started nor failed.
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.FINISHED
    assert job.id in FinishedJobRegistry("jl", connection=connection).get_job_ids()
    assert job.id not in StartedJobRegistry("jl", connection=connection).get_job_ids()
    assert job.id not in FailedJobRegistry("jl", connection=connection).get_job_ids()
    assert env.ledger.verify().ok


def test_duplicate_rq_delivery_while_the_first_run_is_alive_is_skipped(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue], tmp_path: Path
) -> None:
    env, connection, queue = rq_env
    marker, gate = tmp_path / "runs", tmp_path / "gate"
    job = queue.enqueue("tests.faults.rq_jobs.gated", str(marker), str(gate))
    first = _rq_worker(env)
    env.wait_for(lambda: marker_lines(marker) == ["start"], timeout=30)
    holder = env.ledger.status(job.id).claimed_by
    time.sleep(TTL)  # past the grace period: only liveness keeps the holder's claim

    # The same RQ job enqueued again (plain RQ: the ledger already knows it), a second worker.
    Queue("jl", connection=connection).enqueue_job(Job.fetch(job.id, connection=connection))
    second = _rq_worker(env, "--burst")
    assert second.wait(timeout=60) == 0, second.stderr.read() if second.stderr else ""
    assert marker_lines(marker) == ["start"]  # the duplicate did not run
    history = env.ledger.history(job.id)
    assert [e.type for e in history] == ["enqueued", "claimed", "rejected"]
    skip = history[2]
    assert parse(skip.process or "").pid != parse(holder or "").pid
    assert skip.data["reason"] == f"duplicate delivery: job is claimed by live process {holder}"
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.STARTED

    gate.touch()  # let the first run finish
    env.wait_for(lambda: env.ledger.status(job.id).state == "completed", timeout=30)
    terminate_cleanly(first)
    assert marker_lines(marker) == ["start", "done"]  # ran once
    assert [e.type for e in env.ledger.history(job.id)][-2:] == ["rejected", "completed"]
    # RQ's own registries: finished, neither started nor failed, nothing left in between.
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.FINISHED
    assert job.id in FinishedJobRegistry("jl", connection=connection).get_job_ids()
    assert job.id not in StartedJobRegistry("jl", connection=connection).get_job_ids()
    assert job.id not in FailedJobRegistry("jl", connection=connection).get_job_ids()
    assert connection.llen(queue.intermediate_queue_key) == 0
    assert queue.get_job_ids() == []
    assert env.ledger.verify().ok


def test_duplicate_rq_delivery_of_a_completed_job_is_skipped(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue], tmp_path: Path
) -> None:
    env, connection, queue = rq_env
    marker = tmp_path / "runs"
    job = queue.enqueue("tests.faults.rq_jobs.counted", str(marker), 0)
    _run_burst(env)
    # The same RQ job enqueued again: RQ says queued, and a worker gets it.
    Queue("jl", connection=connection).enqueue_job(Job.fetch(job.id, connection=connection))
    _run_burst(env)
    assert marker_lines(marker) == ["start", "done"]
    history = env.ledger.history(job.id)
    assert [e.type for e in history] == ["enqueued", "claimed", "completed", "rejected"]
    assert history[3].data["reason"] == "duplicate delivery: job is completed"
    # RQ agrees the job finished: no failure counted for the skip.
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.FINISHED
    assert job.id not in FailedJobRegistry("jl", connection=connection).get_job_ids()
    assert job.id not in StartedJobRegistry("jl", connection=connection).get_job_ids()
    assert connection.llen(queue.intermediate_queue_key) == 0
    assert env.ledger.verify().ok


def _run_burst(env: FaultEnv) -> None:
    worker = _rq_worker(env, "--burst")
    assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""


def _requeue_after_death(env: FaultEnv, jobs: list[Job]) -> None:
    """What the projector does for a dead holder: abandoned, then requeued by policy."""
    dead = new_identity()
    for job in jobs:
        claim = env.ledger.claim(job.id, dead)
        env.ledger.abandon(job.id, claim.token, "holder died", policy=RecoveryPolicy())


class _Redeliverer:
    """``tests.faults.redeliverer_process``: a slow redeliverer, its stdout lines readable."""

    def __init__(self, env: FaultEnv, batch_size: int, delay: float) -> None:
        assert env.redis is not None
        args = [env.database_url, env.redis.url, str(batch_size), str(delay)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.redeliverer_process", *args],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queues.Queue[dict[str, str]] = queues.Queue()
        self.skipped: list[dict[str, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def expect(self, event: str, timeout: float = 90.0) -> dict[str, str]:
        """The first line saying ``event``; the lines before it go to ``self.skipped``. The
        wait is long: another test's open transaction can hold the catch-up back a while."""
        self.skipped = []
        try:
            while (line := self.lines.get(timeout=timeout))["event"] != event:
                self.skipped.append(line)
        except queues.Empty:
            self.process.kill()
            stderr = self.process.communicate()[1]
            raise AssertionError(f"redeliverer never said {event!r}:\n{stderr}") from None
        return line

    def sigkill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=10)


def test_redeliverer_survives_its_own_sigkill(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue], tmp_path: Path
) -> None:
    env, connection, queue = rq_env
    counted = "tests.faults.rq_jobs.counted"
    jobs = [queue.enqueue(counted, str(tmp_path / str(n)), 0) for n in range(6)]
    connection.delete(queue.key)  # RQ lost them all: only redelivery brings them back
    _requeue_after_death(env, jobs)
    ids = {job.id for job in jobs}

    # Killed mid-batch (2 events a batch; the pause after a delivery holds the batch open):
    # its first delivery happened, its checkpoint did not.
    first = _Redeliverer(env, batch_size=2, delay=30.0)
    killed_after = first.expect("delivered")["job"]
    first.sigkill()
    # Killed again after a few more deliveries, wherever that lands.
    second = _Redeliverer(env, batch_size=2, delay=0.5)
    delivered_again = second.expect("delivered")["job"]
    assert delivered_again == killed_after  # resumed from the checkpoint before it
    second.expect("delivered")
    second.expect("delivered")
    second.sigkill()
    last = _Redeliverer(env, batch_size=2, delay=0.0)
    last.expect("caught up")
    assert last.process.wait(timeout=30) == 0
    assert 0 < len(last.skipped) < len(jobs)  # resumed from its checkpoint, not from the start

    # Every job waits in RQ's queue exactly once: repeated deliveries did not push it twice.
    waiting = queue.get_job_ids()
    assert sorted(waiting) == sorted(ids)
    worker = _rq_worker(env, "--burst")
    assert worker.wait(timeout=120) == 0, worker.stderr.read() if worker.stderr else ""
    for n, job in enumerate(jobs):
        assert marker_lines(tmp_path / f"{n}") == ["start", "done"]  # ran once
        assert env.types(job.id)[-2:] == ["claimed", "completed"]
        assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.FINISHED


def test_redelivery_waits_out_an_rq_broker_outage(
    rq_env: tuple[FaultEnv, redis.Redis, LedgerQueue], caplog: pytest.LogCaptureFixture
) -> None:
    env, connection, queue = rq_env
    assert isinstance(env.redis, RedisServer)
    job = queue.enqueue("tests.faults.rq_jobs.quick", 1)
    connection.delete(queue.key)
    _requeue_after_death(env, [job])
    requeued = env.ledger.history(job.id)[-1]
    saved = connection.dump(job.key)
    env.redis.stop()  # RQ's Redis is down

    target = RQTarget(env.redis.url)
    redeliverer = Redeliverer(env.ledger, target)
    with pytest.raises(RedeliveryFailed, match="redelivery to rq failed: ConnectionError"):
        run_settled(redeliverer)
    assert redeliverer.catchup.checkpoint().position < requeued.position
    thread = threading.Thread(target=redeliverer.run_forever)
    thread.start()
    try:
        env.wait_for(lambda: "retrying in" in caplog.text, timeout=20)
        env.redis.start()  # back, with its data (a persistent Redis)
        connection.restore(job.key, 0, saved)
        env.wait_for(lambda: job.id in queue.get_job_ids(), timeout=40)
    finally:
        redeliverer.stop()
        thread.join(timeout=60)
        target.close()
    assert redeliverer.catchup.checkpoint().position >= requeued.position
    assert queue.get_job_ids() == [job.id]
