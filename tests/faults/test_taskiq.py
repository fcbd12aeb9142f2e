"""A real ``taskiq worker`` on a real Redis broker, recorded by LedgerMiddleware; SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobledger import RecoveryPolicy
from jobledger.identity import new_identity
from jobledger.integrations.taskiq import TaskiqTarget
from jobledger.redelivery import Redeliverer
from tests.faults.conftest import ROOT, TTL, FaultEnv
from tests.helpers import run_cli, run_settled


@pytest.fixture
def taskiq_env(redis_env: FaultEnv) -> Iterator[tuple[FaultEnv, dict[str, str]]]:
    assert redis_env.redis is not None
    settings = {
        "JOBLEDGER_DATABASE_URL": redis_env.database_url,
        "JOBLEDGER_REDIS_URL": redis_env.redis.url,
        "JOBLEDGER_TTL": str(TTL),
        "JOBLEDGER_TEST_TASKIQ_QUEUE": f"taskiq-{secrets.token_hex(4)}",
        "JOBLEDGER_TEST_TASKIQ_PREFIX": redis_env.prefix,
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    sys.modules.pop("tests.faults.taskiq_app", None)  # configured from this environment
    yield redis_env, settings
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _fresh_app() -> Any:
    """``tests.faults.taskiq_app`` imported anew: a broker whose connections are unused."""
    sys.modules.pop("tests.faults.taskiq_app", None)
    return importlib.import_module("tests.faults.taskiq_app")


def _publish(*calls: tuple[str, tuple[object, ...]]) -> list[str]:
    """Publish tasks from this process (the middleware's client side); their ids."""
    taskiq_app = _fresh_app()

    async def kick() -> list[str]:
        await taskiq_app.broker.startup()
        try:
            return [(await getattr(taskiq_app, name).kiq(*args)).task_id for name, args in calls]
        finally:
            await taskiq_app.broker.shutdown()

    return asyncio.run(kick())


def _taskiq_worker(settings: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """``taskiq worker`` on the test app; its output goes to ``log`` (a pipe nobody read
    would fill up and stall it)."""
    with log.open("w") as output:
        return _started(settings, output)


def _started(settings: dict[str, str], output: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "taskiq"),
            "worker",
            "tests.faults.taskiq_app:broker",
            "--workers",
            "1",
            "--no-configure-logging",
        ],
        cwd=ROOT,
        env={**os.environ, **settings},
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_taskiq_worker_records_tasks_and_a_killed_one_is_recovered(
    taskiq_env: tuple[FaultEnv, dict[str, str]], tmp_path: Path
) -> None:
    env, settings = taskiq_env
    projector = env.projector(policy=RecoveryPolicy(max_attempts=3))
    worker = _taskiq_worker(settings, tmp_path / "taskiq-worker.log")
    try:
        marker = tmp_path / "hang.pid"
        added, failed, hung = _publish(("add", (1, 2)), ("boom", ()), ("hang", (str(marker),)))
        assert env.ledger.history(added)[0].data["data"] == {
            "task": "tests.faults.taskiq_app:add",
            "args": [1, 2],
            "kwargs": {},
        }

        def settled() -> bool:
            states = [env.ledger.status(job).state for job in (added, failed, hung)]
            return states == ["completed", "failed", "claimed"] and marker.exists()

        env.wait_for(settled, timeout=30)
        assert env.types(added) == ["enqueued", "claimed", "completed"]
        assert env.ledger.history(failed)[-1].data["error"] == "ValueError: boom"
        holder = env.ledger.status(hung).claimed_by
        assert holder is not None
        assert marker.read_text().split() == [holder.split(":")[1]]  # its worker process holds it

        time.sleep(TTL)  # the claim ages past the grace period while its holder lives
        assert env.ledger.status(hung).state == "claimed"
        os.kill(int(marker.read_text()), signal.SIGKILL)  # the worker process, mid-task
        killed_at = time.monotonic()
        env.wait_for(lambda: env.ledger.status(hung).state == "enqueued", timeout=TTL + 5)
        assert time.monotonic() - killed_at <= TTL + 2
        history = env.ledger.history(hung)
        assert [e.type for e in history] == ["enqueued", "claimed", "abandoned", "requeued"]
        assert history[2].data["holder"] == holder
        assert history[2].process == projector.identity

        # The redelivery outbox publishes it again; taskiq's new worker process runs it once,
        # and a second delivery of it is skipped (recorded, not run).
        target = TaskiqTarget(_fresh_app().broker, env.database_url)  # as in its own process
        with Redeliverer(env.ledger, target) as redeliverer:
            # Until delivered: on the shared server, others' open transactions may hold the
            # catch-up horizon back for a while.
            env.wait_for(lambda: bool(redeliverer.run_once() and redeliverer.delivered), 90)
            run_settled(redeliverer)
            assert redeliverer.delivered == 1
        env.wait_for(lambda: len(marker.read_text().split()) == 2, timeout=30)
        again = env.ledger.status(hung)
        assert (again.state, again.attempt) == ("claimed", 2)
        with contextlib.closing(TaskiqTarget(_fresh_app().broker, env.database_url)) as repeat:
            repeat.deliver(again)
        env.wait_for(lambda: env.types(hung)[-1] == "rejected", timeout=30)
        assert env.ledger.history(hung)[-1].data["reason"].startswith("duplicate delivery")
        time.sleep(0.5)
        assert len(marker.read_text().split()) == 2  # not run a third time
        assert env.ledger.verify().ok
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def test_recover_redelivers_to_a_taskiq_broker_named_on_the_command_line(
    taskiq_env: tuple[FaultEnv, dict[str, str]],
) -> None:
    """``jobledger recover --redeliver taskiq:MODULE:ATTR`` publishes a requeued job again."""
    env, settings = taskiq_env
    (job_id,) = _publish(("add", (2, 3)))
    claim = env.ledger.claim(job_id, new_identity("gone"))  # a holder that died
    env.ledger.abandon(job_id, claim.token, "holder died", policy=RecoveryPolicy())
    queue = settings["JOBLEDGER_TEST_TASKIQ_QUEUE"]
    with redis.Redis.from_url(settings["JOBLEDGER_REDIS_URL"]) as broker_redis:
        broker_redis.delete(queue)  # the first delivery, never run: only the new one counts
        args = ["recover", "--once", "--no-seal", "--redeliver"]
        done = run_cli(*args, "taskiq:tests.faults.taskiq_app:broker", env=settings)
        assert done.returncode == 0, done.stderr
        published = [json.loads(raw) for raw in broker_redis.lrange(queue, 0, -1)]
        broker_redis.delete(queue)
    assert [(m["task_id"], m["args"]) for m in published] == [(job_id, [2, 3])]
