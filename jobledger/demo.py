"""``jobledger demo``: three real worker processes, one SIGKILLed mid-job, recovered live.

Runs on the embedded default (a fresh SQLite file, SQL leases) with no servers,
or on Redis liveness when a Redis URL is given. The demo process runs the
recovery projector in a thread and prints every event as it is appended.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.text import Text

from . import terminal
from .errors import ConfigurationError, LedgerError
from .ledger import Ledger
from .liveness import RedisLiveness, liveness_for
from .policy import RecoveryPolicy
from .records import Claim
from .recovery import RecoveryProjector
from .worker import Worker

JOBS = 30
WORKERS = 3
TTL = 2.0
JOB_SECONDS = (0.4, 0.8)
#: How long the demo waits for a worker to hold a job it can kill.
KILL_WITHIN = 20.0
STYLE = {"abandoned": "bold red", "requeued": "yellow", "completed": "green", "rejected": "red"}


def _demo_prefix(pid: int) -> str:
    """Redis keys of one demo run (the demo's pid), so that runs never mix and are cleaned up."""
    return f"jobledger-demo-{pid}"


# -- a demo worker process -----------------------------------------------------------------


def work(database_url: str, redis_url: str | None, prefix_pid: int, seed: int) -> None:
    """Claim up to two enqueued jobs at a time, "work" them, complete them; until none are left."""
    rng = random.Random(seed)
    ledger = Ledger(database_url, heartbeat_interval=0.2)
    liveness = liveness_for(ledger, redis_url, TTL, prefix=_demo_prefix(prefix_pid))
    with Worker(ledger, liveness) as worker:
        print(worker.identity, flush=True)
        while True:
            claims = _claim_some(ledger, worker, 2)
            if not claims:
                if not any(True for _ in ledger.jobs(state="enqueued")) and not any(
                    True for _ in ledger.jobs(state="claimed")
                ):
                    return
                time.sleep(0.1)
                continue
            deadline = time.monotonic() + rng.uniform(*JOB_SECONDS)
            while time.monotonic() < deadline:
                time.sleep(0.1)
                for claim in claims:
                    worker.heartbeat(
                        claim, progress={"left": round(deadline - time.monotonic(), 1)}
                    )
            for claim in claims:
                worker.complete(claim, result={"by": worker.identity})


def _claim_some(ledger: Ledger, worker: Worker, count: int) -> list[Claim]:
    claims = []
    for status in ledger.jobs(state="enqueued"):
        try:
            claims.append(worker.claim(status.job_id))
        except LedgerError:  # taken, moved on since listed, or this worker stops claiming
            continue
        if len(claims) == count:
            break
    return claims


# -- the demo itself -----------------------------------------------------------------------


class _Tail(threading.Thread):
    """Prints every appended event, in order, as the demo runs."""

    def __init__(self, ledger: Ledger, console: Console, names: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.ledger, self.console, self.names = ledger, console, names
        self.after = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            self.flush()

    def flush(self) -> None:
        for event in self.ledger.events_after(self.after):
            self.after = event.position
            if event.type == "heartbeat":
                continue
            who = self.names.get(event.process or "", event.process or "producer")
            moment = f"{event.recorded_at:%H:%M:%S.%f}"[:-3]
            self.console.print(
                Text.assemble(
                    terminal.text(f"{moment}  {event.job_id:<8} "),
                    terminal.text(f"{event.type:<10}", STYLE.get(event.type, "")),
                    terminal.text(f" by {who}"),
                )
            )


def run_demo(
    redis_url: str | None = None, console: Console | None = None, keep: str | Path | None = None
) -> int:
    """Run the demo; 0 if every job completed and the ledger verifies, else 1.

    The ledger is a SQLite file in a temporary folder that is removed at the end,
    or the new file ``keep``, which stays for the CLI tour.
    """
    console = console or terminal.console()
    if keep is not None:
        path = Path(keep).resolve()
        if path.exists():
            raise ConfigurationError(f"{path} exists; --keep takes the path of a new file")
        return _run(path, redis_url, console, kept=True)
    with tempfile.TemporaryDirectory(prefix="jobledger-demo-") as folder:
        return _run(Path(folder) / "demo.db", redis_url, console, kept=False)


def _run(path: Path, redis_url: str | None, console: Console, kept: bool) -> int:
    url = f"sqlite:///{path}"
    console.rule(terminal.text("jobledger demo", "bold"))
    console.print(
        terminal.text(
            f"ledger: {url}; liveness: {'Redis' if redis_url else 'SQL leases'} (TTL {TTL:.0f}s)"
        )
    )
    ledger = Ledger(url)
    ledger.migrate()
    ledger.enqueue_many([f"job-{n:02d}" for n in range(JOBS)], queue="demo")
    console.print(
        f"enqueued {JOBS} jobs; starting {WORKERS} worker processes and the recovery projector"
    )

    logging.getLogger("jobledger").setLevel(logging.ERROR)  # the event tail tells the story
    liveness = liveness_for(ledger, redis_url, TTL, prefix=_demo_prefix(os.getpid()))
    projector = RecoveryProjector(
        ledger, liveness, RecoveryPolicy(max_attempts=3), interval=0.25, grace=0.5
    )
    names = {projector.identity: "recovery projector"}
    tail = _Tail(ledger, console, names)
    tail.after = ledger.last_position()  # the tail shows what happens from here on
    workers = _start_workers(url, redis_url, names)
    tail.start()
    sweeper = threading.Thread(
        target=projector.run_forever, kwargs={"handle_signals": False}, daemon=True
    )
    sweeper.start()
    try:
        victim = _kill_one_mid_job(ledger, workers, names, console)
        _wait_until_done(ledger, timeout=25)
    finally:
        projector.stop()
        if isinstance(liveness, RedisLiveness):  # leave no demo keys behind
            keys = list(liveness.client.scan_iter(match="{" + _demo_prefix(os.getpid()) + "}*"))
            if keys:
                liveness.client.delete(*keys)
        for process in workers.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        tail.stopping.set()
        tail.join()
        tail.flush()
    outcome = _report(ledger, victim, names, console)
    if kept:
        console.print(
            terminal.text(
                f"the ledger stays in {path}; try: jobledger --database-url {shlex.quote(url)} jobs"
            ),
            soft_wrap=True,  # one line that can be copied
        )
    else:
        console.print(
            "the ledger was in a temporary folder, now removed; "
            "`jobledger demo --keep demo.db` keeps it",
            soft_wrap=True,
        )
    return outcome


def _start_workers(
    url: str, redis_url: str | None, names: dict[str, str]
) -> dict[str, subprocess.Popen[str]]:
    workers = {}
    for n in range(WORKERS):
        args = [sys.executable, "-m", "jobledger.demo", str(os.getpid()), str(n)]
        # The URLs go on stdin: a command line is visible to every user (ps), and a
        # Redis URL may carry a password.
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps({"database_url": url, "redis_url": redis_url}) + "\n")
        process.stdin.close()
        identity = process.stdout.readline().strip()
        workers[identity] = process
        names[identity] = f"worker-{n + 1}"
    return workers


def _kill_one_mid_job(
    ledger: Ledger,
    workers: dict[str, subprocess.Popen[str]],
    names: dict[str, str],
    console: Console,
) -> str | None:
    """SIGKILL the first worker found holding a job, stopped first so that it still holds it
    when killed; ``None`` if none held one in time (on a loaded machine a slow-starting
    worker may find every job taken, and finish idle)."""
    time.sleep(1.0)
    deadline = time.monotonic() + KILL_WITHIN
    while True:
        victim = _holding_worker(ledger, workers)
        if victim is not None:
            # Stopped, it cannot complete what it holds between this read and the kill.
            workers[victim].send_signal(signal.SIGSTOP)
            held = [s.job_id for s in ledger.jobs(claimed_by=victim)]
            if held:
                break
            workers[victim].send_signal(signal.SIGCONT)
        if time.monotonic() > deadline:
            console.print(f">>> no worker held a job within {KILL_WITHIN:.0f}s; none was killed")
            return None
        time.sleep(0.05)
    workers[victim].send_signal(signal.SIGKILL)
    console.print(
        terminal.text(
            f">>> SIGKILL {names[victim]} ({victim}) while it holds {', '.join(held)}", "bold red"
        )
    )
    return victim


def _holding_worker(ledger: Ledger, workers: dict[str, subprocess.Popen[str]]) -> str | None:
    for identity, process in workers.items():
        if process.poll() is None and any(True for _ in ledger.jobs(claimed_by=identity)):
            return identity
    return None


def _wait_until_done(ledger: Ledger, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = Counter(s.state for s in ledger.jobs())
        if states.get("completed", 0) == JOBS:
            return
        time.sleep(0.1)


def _report(
    ledger: Ledger,
    victim: str | None,
    names: dict[str, str],
    console: Console,
) -> int:
    recovered = sorted({e.job_id for e in ledger.events_after(0) if e.type == "abandoned"})
    if recovered:
        orphaned_by = names.get(victim or "", "a dead worker")
        console.rule(terminal.text(f"timeline of {recovered[0]}, orphaned by {orphaned_by}"))
        history = ledger.history(recovered[0])
        start = history[0].recorded_at
        for event in history:
            offset = (event.recorded_at - start).total_seconds()
            who = names.get(event.process or "", event.process or "producer")
            console.print(
                terminal.text(f"  +{offset:6.2f}s  v{event.version:<3} {event.type:<10} {who}")
            )
    states = Counter(s.state for s in ledger.jobs())
    report = ledger.verify()
    console.rule("result")
    console.print(
        terminal.text(
            f"jobs by state: {dict(states)}; abandoned and requeued by recovery: {len(recovered)}"
        )
    )
    if report.ok:
        console.print(
            f"verify: ok ({report.events} events of {report.jobs} jobs: every history a legal "
            "path, every hash chain intact, the projection equal to the fold of the events)"
        )
    else:
        console.print(f"verify: {report.problem_count} problems")
        for problem in report.problems[:10]:
            console.print(terminal.text(f"  {problem}"))
    ok = states.get("completed", 0) == JOBS and report.ok and bool(recovered)
    verdict = ("demo passed", "bold green") if ok else ("demo failed", "bold red")
    console.print(terminal.text(*verdict))
    ledger.close()
    return 0 if ok else 1


if __name__ == "__main__":
    urls = json.loads(sys.stdin.readline())
    work(urls["database_url"], urls["redis_url"], int(sys.argv[1]), int(sys.argv[2]))
