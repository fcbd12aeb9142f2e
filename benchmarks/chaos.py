"""A bounded chaos run: everything that goes wrong in production, at once, then a verdict.

    python benchmarks/chaos.py --backend postgres --seed 7            # ~4 min
    python benchmarks/chaos.py --backend sqlite --seed 7
    python benchmarks/chaos.py --backend sqlite --seed 1 --seconds 25 --jobs 250 --workers 6

``postgres``: a scratch PostgreSQL database created (and dropped) by the run, with
Redis liveness on a private ``redis-server`` the run starts on a port of its own.
``sqlite``: the embedded default, a temporary SQLite file with SQL leases.

A dozen worker processes take jobs, hold one to three at a time, heartbeat the
long ones and complete them; now and then one plays a job system's redelivery
and calls ``Worker.claim`` on a job another worker holds (as RQ or Celery would
redeliver it). Two recovery projector processes sweep. Meanwhile, on a schedule
drawn from ``--seed``, the harness SIGKILLs workers (replacing each at once),
SIGSTOPs others past the TTL and SIGCONTs them, SIGKILLs a projector (and starts
another), restarts Redis (empty), and disturbs the database: on PostgreSQL
``pg_terminate_backend`` of every backend of the scratch database, on SQLite a
writer holding the write lock for longer than the TTL. Then the chaos stops and
the workers drain what is left.

Workers log what they did as JSON lines (claimed with its token, completed,
refused with StaleClaim, ...). The verdict comes from the ledger's own export and
those logs (``chaos_checks.py``): no job lost, none completed twice, no zombie
write accepted, no abandon of a live process, every SIGKILLed holder's claims
abandoned within TTL + 2 s, ``verify()`` ok. It prints the figures and exits 1 on
any violation. The same seed replays the same schedule of actions on the same
worker slots; what the processes do between them depends on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from chaos_checks import Timeline, Verdict, by_job, judge
from sqlalchemy import create_engine, text

from jobledger import Ledger, RecoveryPolicy, RecoveryProjector, RedisLiveness, SqlLiveness, Worker
from jobledger.errors import (
    AlreadyClaimed,
    AttemptsExhausted,
    DatabaseUnavailable,
    LedgerError,
    LivenessUnavailable,
    NotClaiming,
    StaleClaim,
)
from jobledger.liveness import Liveness
from jobledger.schema import jobs as jobs_table
from jobledger.testing import DEFAULT_POSTGRES_URL, RedisServer, scratch_database

HERE = Path(__file__).resolve()
POSTGRES_SERVER_URL = os.environ.get("JOBLEDGER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
PREFIX = "chaos"  # Redis key prefix (the Redis server is private anyway)
#: Redeliveries each worker makes when the harness signals a redelivery storm (SIGUSR1).
STORM = 2
#: Work time factor while draining: what is left is finished quickly, but not at full speed.
DRAIN_PACE = 0.3


@dataclass(frozen=True)
class Plan:
    """Everything a run needs; the children get it as JSON."""

    backend: str
    seed: int
    seconds: float
    jobs: int
    workers: int
    projectors: int
    ttl: float
    interval: float
    max_attempts: int
    redeliver: float
    kills: int
    stops: int
    redis_restarts: int
    db_disruptions: int
    projector_kills: int
    storms: int
    lock_seconds: float
    drain: float
    work: float  # mean seconds a job takes

    @property
    def policy(self) -> RecoveryPolicy:
        return RecoveryPolicy(max_attempts=self.max_attempts)


@dataclass(frozen=True)
class Action:
    at: float  # seconds into the chaos phase
    kind: str  # kill, stop, redis-restart, db-disruption, projector-kill
    slot: int  # worker or projector slot (ignored by the others)


def schedule(plan: Plan) -> list[Action]:
    """The chaos, drawn from the seed alone: same seed, same actions at the same times."""
    rng = random.Random(plan.seed)
    counts = {
        "kill": plan.kills,
        "stop": plan.stops,
        "redis-restart": plan.redis_restarts if plan.backend == "postgres" else 0,
        "db-disruption": plan.db_disruptions,
        "projector-kill": plan.projector_kills,
        "redelivery-storm": plan.storms,
    }
    actions = []
    for kind, count in counts.items():
        slots = plan.projectors if kind == "projector-kill" else plan.workers
        for _ in range(count):
            at = rng.uniform(plan.ttl, max(plan.ttl, plan.seconds - 1))
            actions.append(Action(round(at, 3), kind, rng.randrange(slots)))
    return sorted(actions, key=lambda a: a.at)


# -- the children --------------------------------------------------------------------------


def die_with_parent(parent: int) -> None:
    """Make the kernel SIGKILL this process when the harness dies (Linux), so none outlive it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the harness died before the line above took effect
        sys.exit(1)


def make_liveness(plan: Plan, ledger: Ledger, redis_url: str | None) -> Liveness:
    if redis_url is not None:
        return RedisLiveness(redis_url, ttl=plan.ttl, prefix=PREFIX, socket_timeout=0.5)
    return SqlLiveness(ledger, ttl=plan.ttl)


class JsonLog:
    """One JSON object per line, flushed at once: a SIGKILL loses nothing already said."""

    def __init__(self, path: Path, **always: Any) -> None:
        self.out: TextIO = path.open("a", encoding="utf-8", buffering=1)
        self.always = always

    def __call__(self, event: str, **fields: Any) -> None:
        self.out.write(
            json.dumps({"t": time.time(), "event": event, **self.always, **fields}) + "\n"
        )


class ChaosWorker:
    """A worker process's loop: take jobs (or a redelivered one), work them, log everything."""

    def __init__(self, plan: Plan, url: str, redis_url: str | None, log_path: Path) -> None:
        self.plan = plan
        self.rng = random.Random(f"{plan.seed}:{log_path.name}")
        self.ledger = Ledger(url, heartbeat_interval=plan.ttl / 2)
        self.worker = Worker(
            self.ledger, make_liveness(plan, self.ledger, redis_url), policy=plan.policy
        )
        self.say = JsonLog(log_path, identity=self.worker.identity, pid=os.getpid())
        self.stopping = False
        self.pace = 1.0  # work time factor; the drain hurries (SIGUSR2)
        self.storm = 0  # redeliveries owed: a broker redelivering its unacknowledged jobs
        self.parent = os.getppid()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "storm", STORM))
        signal.signal(signal.SIGUSR2, lambda *_: setattr(self, "pace", DRAIN_PACE))
        self.say("started")
        self.worker.start()
        try:
            while not self.stopping and os.getppid() == self.parent:
                if self.worker.presumed_dead:
                    self.say("presumed_dead")
                    break
                if self.storm or self.rng.random() < self.plan.redeliver:
                    self.redelivery()
                else:
                    self.take_jobs()
        finally:
            self.say("exit")
            self.worker.stop(timeout=0)

    def pick(self, state: str, limit: int) -> list[tuple[str, str | None]]:
        """Random jobs in ``state`` (with their holders), not held by this worker."""
        query = (
            jobs_table.select()
            .with_only_columns(jobs_table.c.job_id, jobs_table.c.claimed_by)
            .where(jobs_table.c.state == state)
            .order_by(text("random()"))
            .limit(limit)
        )
        try:
            with self.ledger.engine.connect() as conn:
                rows = conn.execute(query).all()
        except Exception as exc:  # a terminated backend; try again next round
            self.say("read_error", error=type(exc).__name__)
            time.sleep(0.2)
            return []
        return [
            (row.job_id, row.claimed_by) for row in rows if row.claimed_by != self.worker.identity
        ]

    def take_jobs(self) -> None:
        picked = self.pick("enqueued", self.rng.randint(1, 3))
        if not picked:
            time.sleep(0.2)
            return
        held = [claim for job, _ in picked if (claim := self.claim(job, None)) is not None]
        for claim in held:
            self.work(claim)

    def redelivery(self) -> None:
        self.storm = max(0, self.storm - 1)
        picked = self.pick("claimed", 1)
        if not picked:
            time.sleep(0.05)
            return
        job, holder = picked[0]
        claim = self.claim(job, holder)
        if claim is not None:
            self.work(claim)

    def claim(self, job: str, redelivered_from: str | None) -> Any:
        """``Worker.claim``; the claim, or None after logging why not."""
        kind = "redelivery" if redelivered_from else "claim"
        try:
            claim = self.worker.claim(job)
        except AlreadyClaimed as exc:
            self.say(f"{kind}_refused", job=job, why="AlreadyClaimed", holder=exc.holder)
            return None
        except AttemptsExhausted as exc:
            self.say(f"{kind}_refused", job=job, why="AttemptsExhausted", holder=exc.holder)
            return None
        except NotClaiming:
            return None
        except (DatabaseUnavailable, LivenessUnavailable) as exc:
            self.say(f"{kind}_error", job=job, why=type(exc).__name__)
            time.sleep(0.1)
            return None
        except LedgerError as exc:  # the job moved on meanwhile (completed, requeued by another)
            self.say(f"{kind}_refused", job=job, why=type(exc).__name__)
            return None
        self.say(
            "claimed",
            job=job,
            token=claim.token,
            attempt=claim.attempt,
            redelivered_from=redelivered_from,
        )
        return claim

    def work(self, claim: Any) -> None:
        long = self.rng.random() < 0.05  # a few jobs outlive the TTL, heartbeating
        seconds = (
            self.rng.uniform(1.2, 2.0) * self.plan.ttl
            if long
            else self.rng.uniform(0.2, 1.8) * self.plan.work * self.pace
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            if self.storm:  # the broker delivers to a busy worker too (concurrency > 1)
                self.redelivery()
            try:
                self.worker.heartbeat(claim)
            except StaleClaim as exc:
                self.say(
                    "refused",
                    job=claim.job_id,
                    token=claim.token,
                    write="heartbeat",
                    error=str(exc),
                )
                return
            except LedgerError as exc:
                self.say(
                    "heartbeat_error", job=claim.job_id, token=claim.token, why=type(exc).__name__
                )
        self.complete(claim)

    def complete(self, claim: Any) -> None:
        try:
            self.worker.complete(claim, result={"by": self.worker.identity})
        except StaleClaim as exc:
            self.say(
                "refused", job=claim.job_id, token=claim.token, write="complete", error=str(exc)
            )
        except DatabaseUnavailable:
            # The commit may or may not have happened; the ledger will say which.
            self.say("complete_unknown", job=claim.job_id, token=claim.token)
        except LedgerError as exc:
            self.say("complete_error", job=claim.job_id, token=claim.token, why=type(exc).__name__)
        else:
            self.say("completed", job=claim.job_id, token=claim.token)


def projector_main(plan: Plan, url: str, redis_url: str | None, log_path: Path) -> None:
    logging.basicConfig(
        filename=log_path, level=logging.INFO, format="%(created).3f %(levelname)s %(message)s"
    )
    ledger = Ledger(url)
    projector = RecoveryProjector(
        ledger,
        make_liveness(plan, ledger, redis_url),
        plan.policy,
        interval=plan.interval,
        handle_signals=True,
    )
    projector.run_forever()
    logging.getLogger("chaos").info("summary %s", json.dumps(projector.summary()))


def child_main(role: str, arguments: str) -> None:
    fields = json.loads(arguments)
    die_with_parent(fields["parent"])
    plan = Plan(**fields["plan"])
    log_path = Path(fields["log"])
    if role == "worker":
        ChaosWorker(plan, fields["url"], fields["redis_url"], log_path).run()
    else:
        projector_main(plan, fields["url"], fields["redis_url"], log_path)


# -- the harness ---------------------------------------------------------------------------


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    log: Path
    identity: str | None = None
    stopped_until: float | None = None  # time.monotonic() of the pending SIGCONT


@dataclass
class Tally:
    kills: int = 0
    stops: int = 0
    redis_restarts: int = 0
    terminations: int = 0  # PostgreSQL backends terminated
    lock_holds: int = 0
    projector_kills: int = 0
    storms: int = 0
    replaced: int = 0
    actions: list[dict[str, Any]] = field(default_factory=list)


class Harness:
    def __init__(
        self, plan: Plan, url: str, redis: RedisServer | None, out: Path, sqlite_path: Path | None
    ) -> None:
        self.plan, self.url, self.redis, self.out = plan, url, redis, out
        self.sqlite_path = sqlite_path
        self.redis_url = redis.url if redis is not None else None
        self.rng = random.Random(plan.seed + 1)
        self.workers: list[Child] = []
        self.projectors: list[Child] = []
        self.retired: list[Child] = []
        self.spawned = 0
        self.tally = Tally()
        self.record = JsonLog(out / "chaos.jsonl")
        self.threads: list[threading.Thread] = []
        self.draining = False
        (out / "workers").mkdir(exist_ok=True)
        self.stderr = (out / "children.stderr").open("ab")  # tracebacks, if any child has one

    # -- processes --

    def spawn(self, role: str) -> Child:
        self.spawned += 1
        folder = self.out / ("workers" if role == "worker" else ".")
        log = folder / f"{role}-{self.spawned:04d}.{'jsonl' if role == 'worker' else 'log'}"
        arguments = {
            "plan": asdict(self.plan),
            "url": self.url,
            "redis_url": self.redis_url,
            "log": str(log),
            "parent": os.getpid(),
        }
        process = subprocess.Popen(
            [sys.executable, str(HERE), "--role", role, json.dumps(arguments)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        return Child(process, log)

    def identity(self, child: Child) -> str | None:
        if child.identity is None and child.log.exists():
            first = child.log.read_text(encoding="utf-8").split("\n", 1)[0]
            if first:
                child.identity = json.loads(first)["identity"]
        return child.identity

    def replace_exited(self, refill: bool = True) -> None:
        for slot, child in enumerate(self.workers):
            if child.process.poll() is not None:
                self.retired.append(child)
                self.record(
                    "exited",
                    pid=child.process.pid,
                    identity=self.identity(child),
                    code=child.process.returncode,
                )
                if refill:
                    self.workers[slot] = self.spawn("worker")
                    self.tally.replaced += 1
                    if self.draining:
                        threading.Thread(target=self.hurry, args=(self.workers[slot],)).start()
        for slot, child in enumerate(self.projectors):
            if child.process.poll() is not None:
                self.retired.append(child)
                if refill:
                    self.projectors[slot] = self.spawn("projector")

    def resume_due(self, now: float) -> None:
        for child in self.workers:
            if child.stopped_until is not None and now >= child.stopped_until:
                os.kill(child.process.pid, signal.SIGCONT)
                child.stopped_until = None
                self.record("cont", pid=child.process.pid, identity=self.identity(child))

    # -- chaos actions --

    def act(self, action: Action) -> None:
        getattr(self, "do_" + action.kind.replace("-", "_"))(action.slot)

    def running_worker(self, slot: int) -> Child | None:
        """The worker in ``slot``, or the next one that is running and not stopped."""
        for offset in range(len(self.workers)):
            child = self.workers[(slot + offset) % len(self.workers)]
            if (
                child.process.poll() is None
                and child.stopped_until is None
                and self.identity(child)
            ):
                return child
        return None

    def do_kill(self, slot: int) -> None:
        child = self.running_worker(slot)
        if child is None:
            self.record("skipped", action="kill", why="no running worker")
            return
        self.record("kill", pid=child.process.pid, identity=child.identity)
        child.process.send_signal(signal.SIGKILL)
        child.process.wait()
        self.tally.kills += 1
        self.replace_exited()

    def do_stop(self, slot: int) -> None:
        child = self.running_worker(slot)
        if child is None:
            self.record("skipped", action="stop", why="no running worker")
            return
        pause = self.plan.ttl + self.rng.uniform(0.5, 1.5)
        self.record("stop", pid=child.process.pid, identity=child.identity, seconds=pause)
        child.process.send_signal(signal.SIGSTOP)
        child.stopped_until = time.monotonic() + pause
        self.tally.stops += 1

    def do_redis_restart(self, slot: int) -> None:
        assert self.redis is not None
        self.record("redis-restart")
        self.redis.restart()
        self.record("redis-restarted")
        self.tally.redis_restarts += 1
        # A broker that restarted redelivers what it had handed out (if Redis is the broker too).
        self.do_redelivery_storm(slot)

    def do_redelivery_storm(self, slot: int) -> None:
        """Every running worker is redelivered STORM jobs that others hold, at once."""
        # Only workers that said "started" have their SIGUSR1 handler installed.
        running = [
            c
            for c in self.workers
            if c.process.poll() is None and c.stopped_until is None and self.identity(c)
        ]
        self.record("redelivery-storm", workers=len(running))
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGUSR1)
        self.tally.storms += 1

    def do_db_disruption(self, slot: int) -> None:
        if self.sqlite_path is not None:
            self.hold_sqlite_lock()
        else:
            self.terminate_backends()

    def terminate_backends(self) -> None:
        """pg_terminate_backend of every session of the run's own scratch database."""
        database = self.url.rsplit("/", 1)[1].split("?")[0]
        admin = create_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                ended = conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                        "pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                ).scalar_one()
        finally:
            admin.dispose()
        self.record("terminate", backends=ended)
        self.tally.terminations += ended

    def hold_sqlite_lock(self) -> None:
        """Another writer holds SQLite's write lock past the TTL (a long rebuild, a migration)."""
        assert self.sqlite_path is not None
        path, seconds = self.sqlite_path, self.plan.lock_seconds

        def hold() -> None:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                self.record("lock-hold", seconds=seconds)
                time.sleep(seconds)
                conn.execute("ROLLBACK")
                self.record("lock-release")
            finally:
                conn.close()

        thread = threading.Thread(target=hold, name="chaos-lock", daemon=True)
        thread.start()
        self.threads.append(thread)
        self.tally.lock_holds += 1

    def do_projector_kill(self, slot: int) -> None:
        child = self.projectors[slot]
        if child.process.poll() is None:
            self.record("projector-kill", pid=child.process.pid)
            child.process.send_signal(signal.SIGKILL)
            child.process.wait()
            self.tally.projector_kills += 1
        self.replace_exited()

    # -- phases --

    def run(self, ledger: Ledger) -> None:
        self.projectors = [self.spawn("projector") for _ in range(self.plan.projectors)]
        self.workers = [self.spawn("worker") for _ in range(self.plan.workers)]
        actions = schedule(self.plan)
        self.wait_until_started()
        started = time.monotonic()
        self.record("chaos-start", actions=len(actions))
        while time.monotonic() - started < self.plan.seconds:
            while actions and time.monotonic() - started >= actions[0].at:
                self.act(actions.pop(0))
            self.resume_due(time.monotonic())
            self.replace_exited()
            time.sleep(0.05)
        self.record("drain-start")
        while any(c.stopped_until is not None for c in self.workers):  # every stop runs its course
            self.resume_due(time.monotonic())
            time.sleep(0.05)
        for thread in self.threads:
            thread.join()
        self.draining = True
        for child in self.workers:
            self.hurry(child)
        deadline = time.monotonic() + self.plan.drain
        while time.monotonic() < deadline and unfinished(ledger, self.plan) > 0:
            self.replace_exited()
            time.sleep(0.5)
        self.record("drain-end", unfinished=unfinished(ledger, self.plan))

    def hurry(self, child: Child, timeout: float = 30) -> None:
        """SIGUSR2 (work faster) once the worker said "started" (its handler is installed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and child.process.poll() is None:
            if self.identity(child):
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGUSR2)
                return
            time.sleep(0.1)

    def wait_until_started(self, timeout: float = 60) -> None:
        """The chaos clock starts once every worker is up (starting a dozen takes seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(self.identity(c) for c in self.workers):
            time.sleep(0.1)

    def stop_everyone(self) -> None:
        """SIGTERM, then SIGKILL whatever is left: nothing outlives the run."""
        children = [c for c in self.workers + self.projectors if c.process.poll() is None]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGCONT)
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()
        self.replace_exited(refill=False)


def unfinished(ledger: Ledger, plan: Plan) -> int:
    """Jobs not yet completed or left abandoned at the attempt cap."""
    query = text(
        "SELECT count(*) FROM jobledger_jobs WHERE state <> 'completed' "
        "AND NOT (state = 'abandoned' AND attempt >= :cap)"
    )
    for _ in range(3):
        try:
            with ledger.engine.connect() as conn:
                return int(conn.execute(query, {"cap": plan.max_attempts}).scalar_one())
        except Exception:  # a backend just terminated by the harness itself
            time.sleep(0.2)
    raise RuntimeError("cannot read the ledger")


# -- reading the run back --------------------------------------------------------------------


def moment(canonical: str) -> float:
    return datetime.fromisoformat(canonical.replace("Z", "+00:00")).timestamp()


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by SIGKILL mid-write
            lines.append(json.loads(raw))
    return lines


def timeline_of(
    plan: Plan, actions: list[dict[str, Any]], worker_lines: list[dict[str, Any]]
) -> Timeline:
    timeline = Timeline(ttl=plan.ttl, backend=plan.backend, max_attempts=plan.max_attempts)
    pending_stop: dict[str, dict[str, Any]] = {}
    hold_start = None
    for action in actions:
        kind, who = action["event"], action.get("identity")
        if kind == "kill" and who:
            timeline.killed[who] = action["t"]
        elif kind == "stop" and who:
            pending_stop[who] = action
        elif kind == "cont" and who in pending_stop:
            timeline.stops[who].append((pending_stop.pop(who)["t"], action["t"]))
        elif kind == "exited" and who:
            timeline.exited.setdefault(who, action["t"])
        elif kind == "redis-restart":
            timeline.redis_restarts.append(action["t"])
        elif kind == "lock-hold":
            hold_start = action["t"]
        elif kind == "lock-release" and hold_start is not None:
            timeline.lock_holds.append((hold_start, action["t"]))
    for who, stop in pending_stop.items():  # stopped at the end (cannot happen: all resumed)
        timeline.stops[who].append((stop["t"], float("inf")))
    for line in worker_lines:
        timeline.workers.add(line["identity"])
        if line["event"] == "presumed_dead":
            timeline.presumed_dead.setdefault(line["identity"], line["t"])
        elif line["event"] == "exit":
            timeline.exited[line["identity"]] = min(
                line["t"], timeline.exited.get(line["identity"], line["t"])
            )
    return timeline


def verdict_of(
    plan: Plan, ledger: Ledger, out: Path
) -> tuple[Verdict, Timeline, list[dict[str, Any]]]:
    export = out / "events.jsonl"
    with export.open("w", encoding="utf-8") as stream:
        ledger.export(stream)
    events = read_lines(export)
    for event in events:
        event["t"] = moment(event["recorded_at"])
    worker_lines = [
        line for path in sorted((out / "workers").iterdir()) for line in read_lines(path)
    ]
    actions = read_lines(out / "chaos.jsonl")
    timeline = timeline_of(plan, actions, worker_lines)
    report = ledger.verify()
    problems = [str(problem) for problem in report.problems]
    return judge(by_job(events), worker_lines, timeline, problems), timeline, worker_lines


# -- the whole run ---------------------------------------------------------------------------


@contextlib.contextmanager
def backend(plan: Plan, out: Path) -> Iterator[tuple[str, RedisServer | None, Path | None]]:
    """The run's own database (and Redis): created here, gone afterwards."""
    if plan.backend == "sqlite":
        path = out / "ledger.db"
        url = f"sqlite:///{path}"
        with Ledger(url) as ledger:
            ledger.migrate()
        yield url, None, path
        return
    with scratch_database(POSTGRES_SERVER_URL, prefix="jobledger_chaos") as scratch:
        url = scratch.render_as_string(hide_password=False)
        with Ledger(url) as ledger:
            ledger.migrate()
        with RedisServer() as redis:
            yield url, redis, None


def run(plan: Plan, out: Path, publish: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """One whole run; ``publish`` gets the summary before the database and Redis go away
    (dropping a database can wait on other sessions of the server)."""
    began = time.monotonic()
    with backend(plan, out) as (url, redis, sqlite_path):
        ledger = Ledger(url)
        try:
            ledger.enqueue_many(f"job-{n:05d}" for n in range(plan.jobs))
            harness = Harness(plan, url, redis, out, sqlite_path)
            try:
                harness.run(ledger)
            finally:
                harness.stop_everyone()
            harness.stderr.close()
            ledger.engine.dispose()  # connections the chaos terminated must not serve the checks
            verdict, timeline, worker_lines = verdict_of(plan, ledger, out)
            took = time.monotonic() - began
            result = summary(plan, harness.tally, verdict, timeline, worker_lines, took)
            publish(result)
        finally:
            ledger.close()
    return result


def summary(
    plan: Plan,
    tally: Tally,
    verdict: Verdict,
    timeline: Timeline,
    worker_lines: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    said = [line["event"] for line in worker_lines]
    redeliveries = [
        line
        for line in worker_lines
        if line["event"] in ("redelivery_refused", "redelivery_error")
        or (line["event"] == "claimed" and line.get("redelivered_from"))
    ]
    kinds: dict[str, int] = {}
    for violation in verdict.violations:
        kinds[violation.kind] = kinds.get(violation.kind, 0) + 1
    return {
        "backend": plan.backend,
        "seed": plan.seed,
        "seconds": round(seconds, 1),
        **verdict.figures,
        "worker_processes": len(timeline.workers),
        "kills": tally.kills,
        "stops": tally.stops,
        "redis_restarts": tally.redis_restarts,
        "backends_terminated": tally.terminations,
        "lock_holds": tally.lock_holds,
        "projector_kills": tally.projector_kills,
        "redelivery_storms": tally.storms,
        "redeliveries": len(redeliveries),
        "takeovers": sum(1 for line in redeliveries if line["event"] == "claimed"),
        "abandons_by_takeover": verdict.figures["abandons"]
        - verdict.figures["abandons_by_projector"],
        "worker_refused_writes": said.count("refused"),
        "presumed_dead": said.count("presumed_dead"),
        "latency_samples": len(verdict.latencies),
        "latency_excused": verdict.excused,
        "violations": len(verdict.violations),
        "violation_kinds": kinds,
        "violation_list": [asdict(v) for v in verdict.violations],
    }


def print_summary(result: dict[str, Any], out: Path) -> None:
    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    r = result
    lines = [
        f"chaos run: {r['command']}",
        f"  {r['backend']}, seed {r['seed']}, {r['seconds']} s; logs and export in {out}",
        f"  jobs {r['jobs']}: completed {r['completed']}, left abandoned at the cap "
        f"{r['left_abandoned']}; {r['events']} events, {r['claims']} claims",
        f"  worker processes {r['worker_processes']}: SIGKILLed {r['kills']}, SIGSTOPped "
        f"{r['stops']}, presumed dead {r['presumed_dead']}; projectors SIGKILLed "
        f"{r['projector_kills']}",
        f"  Redis restarts {r['redis_restarts']}, PostgreSQL backends terminated "
        f"{r['backends_terminated']}, SQLite write lock held {r['lock_holds']} times "
        f"(and {r['frozen_stops']} times by a worker SIGSTOPped inside a command)",
        f"  redeliveries {r['redeliveries']} ({r['redelivery_storms']} storms), taken over "
        f"{r['takeovers']}; abandons {r['abandons']} ({r['abandons_by_takeover']} by takeover), "
        f"requeues {r['requeues']}; stale writes refused {r['rejected_writes']}",
        f"  detection after SIGKILL, {r['latency_samples']} claims: p50 "
        f"{seconds(r['latency_p50'])}, p99 {seconds(r['latency_p99'])}, max "
        f"{seconds(r['latency_max'])} ({r['latency_excused']} excused: liveness was unknown)",
        f"  violations: {r['violations']} {r['violation_kinds'] or ''}",
    ]
    shown = r["violation_list"][:40]
    lines += [f"    [{v['kind']}] {v['job']}: {v['detail']} <{v['hint']}>" for v in shown]
    if r["violations"] > len(shown):
        lines.append(f"    ... {r['violations'] - len(shown)} more in the JSON summary")
    print("\n".join(lines))


def plan_from(args: argparse.Namespace) -> Plan:
    seconds, ttl = args.seconds, args.ttl
    return Plan(
        backend=args.backend,
        seed=args.seed,
        seconds=seconds,
        jobs=args.jobs,
        workers=args.workers,
        projectors=2,
        ttl=ttl,
        interval=args.interval,
        max_attempts=args.max_attempts,
        redeliver=args.redeliver,
        kills=args.kills if args.kills is not None else max(2, round(seconds / 6)),
        stops=args.stops if args.stops is not None else max(1, round(seconds / 15)),
        redis_restarts=args.redis_restarts
        if args.redis_restarts is not None
        else max(1, round(seconds / 90)),
        db_disruptions=args.db_disruptions
        if args.db_disruptions is not None
        else max(1, round(seconds / 20)),
        storms=args.storms if args.storms is not None else max(1, round(seconds / 45)),
        projector_kills=args.projector_kills
        if args.projector_kills is not None
        else max(1, round(seconds / 60)),
        lock_seconds=args.lock_seconds if args.lock_seconds is not None else 1.5 * ttl,
        drain=args.drain,
        # Paced so the jobs last about the chaos phase: the chaos has jobs to hit throughout.
        work=min(5.0, max(0.05, 0.75 * args.workers * seconds / max(1, args.jobs))),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=180, help="length of the chaos phase")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.5, help="projector sweep interval")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument(
        "--redeliver", type=float, default=0.1, help="share of rounds that redeliver"
    )
    parser.add_argument("--kills", type=int, help="SIGKILLs of workers (default: one per 6 s)")
    parser.add_argument("--stops", type=int, help="SIGSTOPs past the TTL (default: one per 15 s)")
    parser.add_argument("--redis-restarts", type=int, help="postgres only (default: one per 90 s)")
    parser.add_argument(
        "--db-disruptions", type=int, help="backend terminations or lock holds (one per 20 s)"
    )
    parser.add_argument("--projector-kills", type=int, help="(default: one per 60 s)")
    parser.add_argument(
        "--storms",
        type=int,
        help="redelivery storms, besides one after each Redis restart (one per 45 s)",
    )
    parser.add_argument("--lock-seconds", type=float, help="sqlite lock hold (default 1.5 TTL)")
    parser.add_argument(
        "--drain", type=float, default=90, help="most seconds to finish after the chaos"
    )
    parser.add_argument(
        "--out", type=Path, help="keep logs and the export here (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.role:
        child_main(args.role, rest[0])
        return 0
    plan = plan_from(args)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"jobledger-chaos-{plan.backend}-"))
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/chaos.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def publish(result: dict[str, Any]) -> None:
        result["command"] = command
        print_summary(result, out)
        sys.stdout.flush()
        if args.json:
            args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")

    return 1 if run(plan, out, publish)["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
