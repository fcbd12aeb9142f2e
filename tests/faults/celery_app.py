"""The Celery app of the Celery integration tests, recorded through jobledger.

Configured from the environment the tests give the worker (and ``jobledger
recover``): ``JL_TEST_CELERY_BROKER``, ``JL_TEST_CELERY_QUEUE`` and the usual
``JOBLEDGER_*`` settings. ``python -m tests.faults.celery_app TASK ARGS_JSON
[TASK_ID [OPTIONS_JSON]]`` publishes one task through the recorded app and prints its id.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import Ignore, Reject

from jobledger.integrations.celery import record
from tests.faults import rq_jobs

QUEUE = os.environ.get("JL_TEST_CELERY_QUEUE", "jl-celery")

app = Celery("jl_test", broker=os.environ.get("JL_TEST_CELERY_BROKER", "memory://"))
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    # No pidbox queues left behind on the broker, unless a test revokes through them.
    worker_enable_remote_control=bool(os.environ.get("JL_TEST_CELERY_CONTROL")),
    broker_connection_retry_on_startup=True,
)
if os.environ.get("JL_TEST_CELERY_ACKS_LATE"):
    app.conf.task_acks_late = True  # a message is acknowledged after its run, not before
if os.environ.get("JL_TEST_CELERY_VISIBILITY"):
    # acks_late on Redis: a task running longer than this is delivered again meanwhile.
    app.conf.task_acks_late = True
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["JL_TEST_CELERY_VISIBILITY"]),
        "unacked_restore_interval": 0.5,
        "unacked_restore_throttle": 1,
    }
record(app)


@app.task(name="jl.counted")
def counted(marker: str, first_run_seconds: float) -> str:
    return rq_jobs.counted(marker, first_run_seconds)


@app.task(name="jl.held")
def held(marker: str, release: str) -> str:
    """Write ``start``, wait until the file ``release`` exists, write ``done``."""
    with open(marker, "a") as file:
        file.write("start\n")
    deadline = time.monotonic() + 120
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(marker, "a") as file:
        file.write("done\n")
    return "released"


@app.task(name="jl.flaky", bind=True)
def flaky(self: Any, marker: str) -> str:
    """Retry at once on the first run; succeed on the second."""
    if rq_jobs.started(marker):
        raise self.retry(countdown=0)
    return "second time lucky"


@app.task(name="jl.rejected")
def rejected(marker: str, requeue: bool) -> str:
    """Reject the first run's message (requeued or not); complete a second run."""
    if rq_jobs.started(marker):
        raise Reject("not now", requeue=requeue)
    return "taken the second time"


@app.task(name="jl.ignored")
def ignored(marker: str) -> None:
    """Tell Celery to record no state for this run (``Ignore``)."""
    with open(marker, "a") as file:
        file.write("start\n")
    raise Ignore()


@app.task(name="jl.broken")
def broken() -> None:
    raise RuntimeError("this task always fails")


if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    task_id = sys.argv[3] or None if len(sys.argv) > 3 else None
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    sent = app.send_task(name, args=args, task_id=task_id, queue=QUEUE, **options)
    print(sent.id, flush=True)
