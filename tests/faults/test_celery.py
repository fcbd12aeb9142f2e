"""A real ``celery worker`` (prefork, two children) recorded through jobledger; killed mid-task.

On the real RabbitMQ at 127.0.0.1:5672 (guest/guest, a queue of the test's own,
deleted afterwards) and on a private Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue as queues
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection

from jobledger.identity import parse
from tests.conftest import RECOVERED_STORY, service_missing
from tests.faults.conftest import ROOT, TTL, FaultEnv
from tests.helpers import marker_lines, terminate_cleanly

CELERY = Path(sys.executable).parent / "celery"
RABBITMQ_URL = os.environ.get("JOBLEDGER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
APP = "tests.faults.celery_app"


class CeleryEnv:
    """A fault environment plus a broker and a queue of the test's own."""

    def __init__(self, env: FaultEnv, broker: str) -> None:
        self.env, self.broker = env, broker
        self.queue = f"jl-celery-{secrets.token_hex(4)}"
        self.processes: list[subprocess.Popen[str]] = []
        self.extra: dict[str, str] = {}  # more settings for the app in every process

    @property
    def settings(self) -> dict[str, str]:
        assert self.env.redis is not None
        return {
            **os.environ,
            "JOBLEDGER_DATABASE_URL": self.env.database_url,
            "JOBLEDGER_REDIS_URL": self.env.redis.url,
            "JOBLEDGER_TTL": str(TTL),
            "JL_TEST_CELERY_BROKER": self.broker,
            "JL_TEST_CELERY_QUEUE": self.queue,
            "PYTHONPATH": str(ROOT),
            **self.extra,
        }

    def worker(self, pool: str = "prefork") -> CeleryWorker:
        args = [str(CELERY), "-A", APP, "worker", "--pool", pool, "--concurrency", "2"]
        args += ["-Q", self.queue, "--without-gossip", "--without-mingle", "--without-heartbeat"]
        started = CeleryWorker([*args, "--loglevel", "WARNING"], self.settings)
        self.processes.append(started.process)
        return started

    def publish(
        self, task: str, args: list[object], task_id: str | None = None, **options: object
    ) -> str:
        """Publish through the recorded app, in a process of its own; the task id."""
        command = ["-m", APP, task, json.dumps(args), task_id or "", json.dumps(options)]
        return self._python(command)

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        """Revoke a task through the broker's control channel, from a process of its own."""
        code = (
            "import sys; from tests.faults.celery_app import app; "
            "app.control.revoke(sys.argv[1], terminate=sys.argv[2] == '1')"
        )
        self._python(["-c", code, task_id, "1" if terminate else "0"])

    def _python(self, args: list[str]) -> str:
        """Run ``python ARGS`` with the app's settings; what it printed (it must succeed)."""
        done = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.settings,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def recover(self) -> subprocess.Popen[str]:
        """``jobledger recover --redeliver celery:...``, sweeping every 0.2 s."""
        args = [sys.executable, "-m", "jobledger.cli", "recover", "--ttl", str(TTL)]
        args += ["--interval", "0.2", "--redeliver", f"celery:{APP}:app"]
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.settings,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so close() kills its group only
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool children
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)
        if self.broker.startswith("amqp"):
            with Connection(self.broker) as connection:
                channel = connection.default_channel
                channel.queue_delete(self.queue)
                channel.exchange_delete(self.queue)


class CeleryWorker:
    """A ``celery worker`` in a process group of its own; its log lines readable."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: queues.Queue[str] = queues.Queue()
        self.said: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def expect(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queues.Empty):
                line = self.lines.get(timeout=0.1)
                self.said.append(line)
                if text in line:
                    return line
        raise AssertionError(f"the worker never said {text!r}:\n{''.join(self.said)}")


def _rabbitmq_missing() -> str | None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError as exc:
        return str(exc)
    return None


@pytest.fixture(params=["rabbitmq", "redis"])
def celery_env(request: pytest.FixtureRequest, redis_env: FaultEnv) -> Iterator[CeleryEnv]:
    yield from _celery_env(request.param, redis_env)


@pytest.fixture
def redis_celery_env(redis_env: FaultEnv) -> Iterator[CeleryEnv]:
    yield from _celery_env("redis", redis_env)


def _celery_env(broker_kind: str, redis_env: FaultEnv) -> Iterator[CeleryEnv]:
    assert redis_env.redis is not None
    redis_env.prefix = "jobledger"  # the integration's liveness prefix; the projector's too
    if broker_kind == "rabbitmq":
        why = _rabbitmq_missing()
        if why is not None:
            service_missing(f"RabbitMQ at {RABBITMQ_URL}", why)
        broker = RABBITMQ_URL
    else:
        broker = f"redis://127.0.0.1:{redis_env.redis.port}/1"
    made = CeleryEnv(redis_env, broker)
    yield made
    made.close()


def _moves(env: FaultEnv, job_id: str) -> list[str]:
    return [t for t in env.types(job_id) if t != "heartbeat"]


def _skip_reasons(env: FaultEnv, job_id: str) -> list[str]:
    """The recorded duplicate-delivery skips, without the holder's identity."""
    return [
        e.data["reason"].removesuffix(f" {e.data['holder']}")
        for e in env.ledger.history(job_id)
        if e.type == "rejected"
    ]


def _claimed_by(env: FaultEnv, job_id: str) -> int:
    env.wait_for(lambda: env.ledger.status(job_id).state == "claimed", timeout=60)
    return parse(env.ledger.status(job_id).claimed_by or "").pid


@pytest.mark.slow
def test_killed_pool_child_task_is_redelivered_and_runs_once_more(
    celery_env: CeleryEnv, tmp_path: Path
) -> None:
    env, marker = celery_env.env, tmp_path / "runs"
    worker = celery_env.worker()
    recover = celery_env.recover()
    task_id = celery_env.publish("jl.counted", [str(marker), 120])
    child = _claimed_by(env, task_id)
    assert child != worker.process.pid  # a pool child holds the claim, not the main worker
    time.sleep(TTL)  # let the claim age past the grace period
    os.kill(child, signal.SIGKILL)
    worker.expect("WorkerLostError")  # Celery acknowledged the message: lost to Celery

    try:
        env.wait_for(lambda: env.ledger.status(task_id).state == "completed", timeout=60)
    except AssertionError:
        recover.kill()
        said = recover.communicate()[1]
        raise AssertionError(f"never ran again; recover said:\n{said}") from None
    assert "redelivered to celery" in terminate_cleanly(recover)
    history = [e for e in env.ledger.history(task_id) if e.type != "heartbeat"]
    assert [e.type for e in history] == RECOVERED_STORY
    assert history[0].data["data"]["celery_task"] == "jl.counted"
    assert history[0].data["queue"] == celery_env.queue
    assert parse(history[1].process or "").pid == child
    assert parse(history[4].process or "").pid not in (child, worker.process.pid)
    assert marker_lines(marker) == ["start", "start", "done"]  # killed once, completed once
    assert env.ledger.verify().ok


@pytest.mark.slow
def test_duplicate_delivery_while_the_first_run_is_alive_never_runs(
    celery_env: CeleryEnv, tmp_path: Path
) -> None:
    env, marker, release = celery_env.env, tmp_path / "runs", tmp_path / "release"
    worker = celery_env.worker()
    task_id = celery_env.publish("jl.held", [str(marker), str(release)])
    _claimed_by(env, task_id)
    time.sleep(TTL)  # old enough to be taken over, were its holder dead

    assert celery_env.publish("jl.held", [str(marker), str(release)], task_id) == task_id
    worker.expect(f"duplicate delivery of task {task_id!r} skipped")
    assert env.ledger.status(task_id).state == "claimed"
    assert marker_lines(marker) == ["start"]
    release.touch()

    env.wait_for(lambda: env.ledger.status(task_id).state == "completed", timeout=30)
    assert _moves(env, task_id) == ["enqueued", "claimed", "rejected", "completed"]
    assert _skip_reasons(env, task_id) == ["duplicate delivery: job is claimed by live process"]
    assert marker_lines(marker) == ["start", "done"]  # the duplicate never ran
    assert env.ledger.verify().ok


@pytest.mark.slow
def test_killed_worker_and_children_task_runs_again_on_a_new_worker(
    celery_env: CeleryEnv, tmp_path: Path
) -> None:
    env, marker = celery_env.env, tmp_path / "runs"
    first = celery_env.worker()
    recover = celery_env.recover()
    task_id = celery_env.publish("jl.counted", [str(marker), 120])
    child = _claimed_by(env, task_id)
    time.sleep(TTL)
    os.killpg(first.process.pid, signal.SIGKILL)  # the main worker and both children
    first.process.wait(timeout=10)

    env.wait_for(lambda: env.ledger.status(task_id).state != "claimed", timeout=TTL + 10)
    second = celery_env.worker()
    env.wait_for(lambda: env.ledger.status(task_id).state == "completed", timeout=60)
    assert "redelivered to celery" in terminate_cleanly(recover)
    history = [e for e in env.ledger.history(task_id) if e.type != "heartbeat"]
    assert [e.type for e in history][:4] == ["enqueued", "claimed", "abandoned", "requeued"]
    assert [e.type for e in history][-2:] == ["claimed", "completed"]
    assert parse(history[1].process or "").pid == child
    assert parse(history[-2].process or "").pid not in (child, first.process.pid)
    assert second.process.poll() is None
    assert marker_lines(marker) == ["start", "start", "done"]
    assert env.ledger.verify().ok


@pytest.mark.slow
def test_retry_failure_expiry_and_unknown_task_map_to_lifecycle_moves(
    celery_env: CeleryEnv, tmp_path: Path
) -> None:
    env, marker = celery_env.env, tmp_path / "runs"
    expired = celery_env.publish("jl.broken", [], expires=0.5)  # seconds from now
    unknown = celery_env.publish("jl.no_such_task", [])
    time.sleep(1)  # expired before any worker sees it
    celery_env.worker()
    retried = celery_env.publish("jl.flaky", [str(marker)])
    broken = celery_env.publish("jl.broken", [])

    ended = ("completed", "failed", "cancelled")
    for job_id in (unknown, retried, broken):
        env.wait_for(lambda job_id=job_id: env.ledger.status(job_id).state in ended, timeout=60)
    if celery_env.broker.startswith("amqp"):
        # Celery sends the expiry as the message's TTL: RabbitMQ drops it unseen by any
        # worker, so nothing tells the ledger; it stays enqueued (see the README).
        assert _moves(env, expired) == ["enqueued"]
    else:
        env.wait_for(lambda: env.ledger.status(expired).state == "cancelled", timeout=30)
        assert _moves(env, expired) == ["enqueued", "cancelled"]
    assert _moves(env, unknown) == ["enqueued", "cancelled"]
    assert "unknown to the Celery worker" in env.ledger.history(unknown)[-1].data["reason"]
    # The claim is released before the retry is published, so the retry can be claimed.
    assert _moves(env, retried) == ["enqueued", "claimed", "released", "claimed", "completed"]
    assert marker_lines(marker) == ["start", "start"]
    assert _moves(env, broken) == ["enqueued", "claimed", "failed"]
    assert "RuntimeError: this task always fails" in (env.ledger.status(broken).last_error or "")
    assert env.ledger.verify().ok


@pytest.mark.slow
def test_reject_ignore_and_revoke_with_terminate_map_to_lifecycle_moves(
    celery_env: CeleryEnv, tmp_path: Path
) -> None:
    env = celery_env.env
    celery_env.extra = {"JL_TEST_CELERY_CONTROL": "1"}  # revoke reaches the worker
    celery_env.worker()
    markers = {name: tmp_path / name for name in ("dropped", "requeued", "ignored", "held")}
    dropped = celery_env.publish("jl.rejected", [str(markers["dropped"]), False])
    requeued = celery_env.publish("jl.rejected", [str(markers["requeued"]), True])
    ignored = celery_env.publish("jl.ignored", [str(markers["ignored"])])
    held = celery_env.publish("jl.held", [str(markers["held"]), str(tmp_path / "never")])
    _claimed_by(env, held)
    env.wait_for(lambda: marker_lines(markers["held"]) == ["start"], timeout=30)
    celery_env.revoke(held, terminate=True)

    jobs = {"dropped": dropped, "requeued": requeued, "ignored": ignored, "held": held}
    ended = ("completed", "failed", "abandoned")
    try:
        env.wait_for(
            lambda: all(env.ledger.status(j).state in ended for j in jobs.values()), timeout=60
        )
    except AssertionError:
        stories = {name: _moves(env, job_id) for name, job_id in jobs.items()}
        raise AssertionError(f"not all ended: {stories}") from None
    # Reject without requeue: the message is dropped, so the task failed.
    assert _moves(env, dropped) == ["enqueued", "claimed", "failed"]
    assert env.ledger.status(dropped).last_error == "rejected by the task: not now"
    assert marker_lines(markers["dropped"]) == ["start"]
    # Reject with requeue, without acks_late: the message was acknowledged on arrival, so
    # nothing brings it back; the ledger says so instead of waiting for it.
    assert _moves(env, requeued) == ["enqueued", "claimed", "failed"]
    assert "not requeued: acks_late is off" in (env.ledger.status(requeued).last_error or "")
    assert marker_lines(markers["requeued"]) == ["start"]
    # Ignore: the task ran; Celery records no state, the ledger says it completed.
    assert _moves(env, ignored) == ["enqueued", "claimed", "completed"]
    # Revoked with terminate: the child records its end as it exits; never requeued.
    assert _moves(env, held) == ["enqueued", "claimed", "failed"]
    assert (env.ledger.status(held).last_error or "").startswith("terminated: SystemExit")
    assert marker_lines(markers["held"]) == ["start"]
    assert env.ledger.verify().ok


@pytest.mark.slow
def test_reject_with_requeue_and_acks_late_is_released_and_runs_again(
    celery_env: CeleryEnv, tmp_path: Path
) -> None:
    env, marker = celery_env.env, tmp_path / "runs"
    celery_env.extra = {"JL_TEST_CELERY_ACKS_LATE": "1"}
    celery_env.worker()
    task_id = celery_env.publish("jl.rejected", [str(marker), True])
    env.wait_for(lambda: env.ledger.status(task_id).state == "completed", timeout=60)
    assert _moves(env, task_id) == ["enqueued", "claimed", "released", "claimed", "completed"]
    assert env.ledger.history(task_id)[2].data["reason"] == "rejected by the task and requeued"
    assert marker_lines(marker) == ["start", "start"]
    assert env.ledger.verify().ok


@pytest.mark.slow
def test_redis_visibility_timeout_redelivery_while_the_first_run_is_alive_never_runs(
    redis_celery_env: CeleryEnv, tmp_path: Path
) -> None:
    celery_env = redis_celery_env
    env, marker, release = celery_env.env, tmp_path / "runs", tmp_path / "release"
    celery_env.extra = {"JL_TEST_CELERY_VISIBILITY": "2"}  # acks_late, 2 s visibility
    worker = celery_env.worker()
    task_id = celery_env.publish("jl.held", [str(marker), str(release)])
    _claimed_by(env, task_id)

    # Redis hands the unacknowledged message out again while the first run holds it.
    worker.expect(f"duplicate delivery of task {task_id!r} skipped", timeout=45)
    assert marker_lines(marker) == ["start"]
    release.touch()

    env.wait_for(lambda: env.ledger.status(task_id).state == "completed", timeout=30)
    moves = _moves(env, task_id)
    assert moves[:2] == ["enqueued", "claimed"]
    assert moves[-1] == "completed"
    assert set(moves[2:-1]) == {"rejected"}  # each redelivered copy, recorded as skipped
    assert marker_lines(marker) == ["start", "done"]  # the redelivered copy never ran
    assert env.ledger.verify().ok


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_solo_and_threads_pools_record_under_the_worker_process_identity(
    redis_celery_env: CeleryEnv, tmp_path: Path, pool: str
) -> None:
    env = redis_celery_env.env
    worker = redis_celery_env.worker(pool)
    ran = [redis_celery_env.publish("jl.counted", [str(tmp_path / str(n)), 0]) for n in range(3)]
    broken = redis_celery_env.publish("jl.broken", [])
    for job_id in ran:
        env.wait_for(lambda job_id=job_id: env.ledger.status(job_id).state == "completed", 60)
    env.wait_for(lambda: env.ledger.status(broken).state == "failed", timeout=60)
    holders = {parse(env.ledger.history(job_id)[1].process or "").pid for job_id in ran}
    assert holders == {worker.process.pid}  # no pool children: the worker itself registers
    assert _moves(env, broken) == ["enqueued", "claimed", "failed"]

    worker.process.send_signal(signal.SIGTERM)  # warm shutdown: the identity unregisters
    assert worker.process.wait(timeout=30) == 0
    assert env.redis is not None
    with redis.Redis.from_url(env.redis.url) as liveness:
        assert not liveness.keys("jobledger:process:*")
    assert env.ledger.verify().ok
