"""Baseline for detection latency: how long RQ takes to notice a SIGKILLed worker's job.

RQ 3 keeps a running job in its ``StartedJobRegistry`` with a score of "now +
heartbeat TTL", the TTL being ``min(job timeout left, job_monitoring_interval) +
60`` s (30 + 60 = 90 s by default), refreshed while the work horse runs. A
worker's maintenance run, every ``maintenance_interval`` (600 s by default),
moves expired entries to the ``FailedJobRegistry``. So with defaults a killed
job reaches the failed registry 60-90 s after the kill plus up to 600 s for the
next maintenance run of a surviving worker: up to ~690 s.

An idle worker only gets to its maintenance check when its blocking dequeue
times out, after ``worker_ttl - 15`` s (405 s by default). Here the maintenance
interval is shortened to 1 s and the worker TTL to 16 s (so the dequeue wait is
1 s); the job monitoring interval stays at its default. Several RQ workers with
their work horses are SIGKILLed at once while a surviving worker runs maintenance.

    python benchmarks/rq_detection.py --kills 20
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
from common import Row, Settings, percentile
from rq import Queue
from rq.job import Job, JobStatus

from jobledger.testing import RedisServer

HERE = Path(__file__).resolve().parent
RQ = Path(sys.executable).parent / "rq"
MAINTENANCE_INTERVAL = 1
#: RQ 3.0 defaults, from rq/defaults.py and Worker.get_heartbeat_ttl().
DEFAULT_MONITORING_INTERVAL, DEFAULT_MAINTENANCE_INTERVAL, HEARTBEAT_SLACK = 30, 600, 60


def sleeper(seconds: float) -> None:
    time.sleep(seconds)


def run(settings: Settings) -> list[Row]:
    kills = settings.pick(5, 20)
    latencies = measure(kills)
    worst_default = DEFAULT_MONITORING_INTERVAL + HEARTBEAT_SLACK + DEFAULT_MAINTENANCE_INTERVAL
    return [
        Row(
            f"baseline of the row above: RQ, SIGKILLed job to its failed registry, {kills} kills, "
            "maintenance every 1 s (p99 after the kill)",
            None,
            percentile(latencies, 0.99),
            "s",
            "RQ 3 (baseline)",
            "",
            higher_is_better=False,
            note=(
                f"p50 {statistics.median(latencies):.0f} s, max {max(latencies):.0f} s after the "
                f"kill; with RQ defaults up to {worst_default} s (90 s TTL + 600 s maintenance)"
            ),
        )
    ]


def measure(kills: int) -> list[float]:
    with RedisServer() as server:
        connection = redis.Redis.from_url(server.url)
        queue = Queue("bench", connection=connection)
        jobs = [queue.enqueue("rq_detection.sleeper", 3600, job_timeout=7200) for _ in range(kills)]
        workers = [_worker(server.url) for _ in range(kills)]
        _wait(lambda: all(j.get_status(refresh=True) == JobStatus.STARTED for j in jobs), 60)
        horses = [child for w in workers for child in _children(w.pid)]
        if len(horses) != kills:
            raise RuntimeError(f"found {len(horses)} work horses for {kills} busy workers")
        survivor = _worker(server.url)  # runs the maintenance that finds the dead jobs
        killed_at = time.monotonic()
        for pid in [w.pid for w in workers] + horses:
            os.kill(pid, signal.SIGKILL)
        for worker in workers:
            worker.wait()
        failed_at: dict[str, float] = {}
        deadline = killed_at + 400
        while len(failed_at) < kills and time.monotonic() < deadline:
            for job in jobs:
                if (
                    job.id not in failed_at
                    and Job.fetch(job.id, connection=connection).get_status() == JobStatus.FAILED
                ):
                    failed_at[job.id] = time.monotonic()
            time.sleep(0.2)
        survivor.kill()
        survivor.wait()
        connection.close()
    if len(failed_at) < kills:
        raise RuntimeError(f"RQ failed only {len(failed_at)} of {kills} jobs within 400 s")
    return [failed_at[j.id] - killed_at for j in jobs]


def _worker(url: str) -> subprocess.Popen[bytes]:
    """An RQ worker on the bench queue, maintenance every 1 s, a 1 s dequeue wait."""
    args = [str(RQ), "worker", "--url", url, "bench"]
    args += ["--maintenance-interval", str(MAINTENANCE_INTERVAL), "--worker-ttl", "16"]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    quiet = subprocess.DEVNULL
    return subprocess.Popen(args, cwd=HERE, env=env, stdout=quiet, stderr=quiet)


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (RQ's work horses), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError("RQ workers did not start their jobs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    latencies = measure(parser.parse_args().kills)
    print(
        f"RQ: p50 {statistics.median(latencies):.1f} s, p99 {percentile(latencies, 0.99):.1f} s, "
        f"max {max(latencies):.1f} s from SIGKILL to the failed registry"
    )


if __name__ == "__main__":
    main()
