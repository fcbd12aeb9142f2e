"""The recovery projector, in-process, against real Redis and real SQL leases."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobledger import Ledger, RecoveryPolicy, RecoveryProjector, RedisLiveness, Worker
from jobledger.errors import ConfigurationError, UnknownJob
from jobledger.identity import new_identity
from tests.conftest import Backend
from tests.helpers import info


def _orphan_jobs(backend: Backend, count: int, ttl: float = 0.5) -> str:
    """Jobs claimed by a process that registers, then stops refreshing; its identity."""
    liveness = backend.liveness(ttl=ttl)
    holder = info()
    liveness.register(holder)
    ids = [f"orphan-{i}" for i in range(count)]
    backend.ledger.enqueue_many(ids)
    for job_id in ids:
        backend.ledger.claim(job_id, holder.identity)
    return holder.identity


def test_dead_holder_jobs_are_abandoned_and_requeued(backend: Backend) -> None:
    # A TTL of 1 s: with 0.5 s, one slow fsync of the SQLite lease store on a loaded machine
    # (0.2 s, over BLOCKED_SHARE of the TTL) rightly made the sweep distrust every lapse.
    holder = _orphan_jobs(backend, 3, ttl=1.0)
    projector = RecoveryProjector(backend.ledger, backend.liveness(ttl=1.0), grace=0.2)
    assert projector.run_once() == []  # still alive
    time.sleep(1.2)
    recovered = projector.run_once()
    assert sorted(r.job_id for r in recovered) == ["orphan-0", "orphan-1", "orphan-2"]
    assert all(r.requeued and r.holder == holder for r in recovered)
    history = backend.ledger.history("orphan-1")
    assert [e.type for e in history] == ["enqueued", "claimed", "abandoned", "requeued"]
    assert history[2].process == projector.identity
    assert history[2].data["holder"] == holder
    assert backend.ledger.status("orphan-1").state == "enqueued"
    assert projector.counters.abandoned == 3
    assert projector.counters.requeued == 3
    assert projector.run_once() == []  # nothing left to do
    assert holder not in backend.liveness().known()  # a lapsed holder of nothing is forgotten


def test_live_holders_are_never_abandoned(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue_many(["a", "b"])
    with Worker(ledger, backend.liveness(ttl=0.5)) as worker:
        worker.claim("a")
        worker.claim("b")
        projector = RecoveryProjector(ledger, backend.liveness(ttl=0.5), grace=0)
        for _ in range(8):
            assert projector.run_once() == []
            time.sleep(0.2)
        assert {s.state for s in ledger.jobs()} == {"claimed"}


def test_grace_period_protects_young_claims(backend: Backend) -> None:
    _orphan_jobs(backend, 1, ttl=0.3)
    projector = RecoveryProjector(backend.ledger, backend.liveness(ttl=0.3), grace=2.0)
    time.sleep(0.5)
    assert projector.run_once() == []
    assert backend.ledger.status("orphan-0").state == "claimed"


def test_attempt_cap_leaves_poison_pills_abandoned(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("poison", queue="risky")
    ledger.enqueue("fine", queue="safe")
    policy = RecoveryPolicy(max_attempts=5, max_attempts_by_queue={"risky": 2})
    projector = RecoveryProjector(ledger, backend.liveness(ttl=0.3), policy, grace=0)
    for attempt in (1, 2):
        for job_id in ("poison", "fine"):
            ledger.claim(job_id, new_identity())  # holders that never register: dead
        (first, second) = sorted(projector.run_once(), key=lambda r: r.job_id)
        assert first.job_id == "fine"
        assert first.requeued
        assert second.requeued is (attempt < 2)
    assert ledger.status("poison").state == "abandoned"
    assert ledger.status("poison").attempt == 2
    assert ledger.status("fine").state == "enqueued"
    assert projector.counters.left_abandoned == 1


def test_concurrent_projectors_abandon_each_claim_once(backend: Backend) -> None:
    _orphan_jobs(backend, 40, ttl=0.3)
    time.sleep(0.5)
    projectors = [
        RecoveryProjector(backend.ledger, backend.liveness(ttl=0.3), grace=0, abandon_concurrency=4)
        for _ in range(3)
    ]
    barrier = threading.Barrier(len(projectors))

    def sweep(projector: RecoveryProjector) -> None:
        barrier.wait()
        projector.run_once()

    threads = [threading.Thread(target=sweep, args=(p,)) for p in projectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p.counters.abandoned for p in projectors) == 40
    for i in range(40):
        types = Counter(e.type for e in backend.ledger.history(f"orphan-{i}"))
        assert types["abandoned"] == 1
        assert types["requeued"] == 1


def _dead_claims(ledger: Ledger, count: int, holders: int = 3) -> list[str]:
    """Jobs claimed by processes that never registered (dead to every projector)."""
    identities = [new_identity() for _ in range(holders)]
    ids = [f"dead-{i:03d}" for i in range(count)]
    ledger.enqueue_many(ids)
    for n, job_id in enumerate(ids):
        ledger.claim(job_id, identities[n % holders])
    return ids


def test_dead_claims_are_ended_several_at_once(backend: Backend) -> None:
    ids = _dead_claims(backend.ledger, 30)
    projector = RecoveryProjector(
        backend.ledger, backend.liveness(), grace=0, abandon_concurrency=4
    )
    recovered = projector.run_once()
    assert sorted(r.job_id for r in recovered) == ids
    for recovery in recovered:
        history = backend.ledger.history(recovery.job_id)
        assert [e.type for e in history] == ["enqueued", "claimed", "abandoned", "requeued"]
        assert history[2].data["holder"] == recovery.holder == history[1].process
        assert recovery.token == history[1].version
        assert recovery.requeued
    assert (projector.counters.abandoned, projector.counters.requeued) == (30, 30)
    assert projector.run_once() == []


class _OneUnknownJob(RecoveryProjector):
    """Finds in its first sweep, first, the dead claim of a job that does not exist."""

    def _orphans(self, holders: Any) -> list[Any]:
        found = super()._orphans(holders)
        if self.counters.sweeps == 0:
            found.insert(0, replace(found[0], job_id="no-such-job"))
        return found


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_failed_abandon_stops_the_sweep_and_what_was_done_is_counted(
    backend: Backend, concurrency: int
) -> None:
    ids = _dead_claims(backend.ledger, 30)
    projector = _OneUnknownJob(
        backend.ledger, backend.liveness(), grace=0, abandon_concurrency=concurrency
    )
    with pytest.raises(UnknownJob):
        projector.run_once()
    ended = [j for j in ids if backend.ledger.status(j).state == "enqueued"]
    assert projector.counters.abandoned == len(ended)
    # What was under way when it failed was ended and counted; nothing was started after.
    assert len(ended) == 0 if concurrency == 1 else len(ended) < len(ids)
    assert len(projector.run_once()) == 30 - len(ended)  # the next sweep ends the rest


@pytest.mark.parametrize("concurrency", [0, -1, True, 2.0, "4"])
def test_abandon_concurrency_must_be_a_positive_int(backend: Backend, concurrency: Any) -> None:
    with pytest.raises(ConfigurationError, match="abandon_concurrency must be an integer >= 1"):
        RecoveryProjector(backend.ledger, backend.liveness(), abandon_concurrency=concurrency)


def test_hung_job_of_a_live_worker(backend: Backend) -> None:
    ledger = backend.ledger
    ledger.enqueue("hung", queue="reports")
    ledger.enqueue("ticking", queue="reports")
    ledger.enqueue("other", queue="mail")
    policy = RecoveryPolicy(heartbeat_timeout_by_queue={"reports": 0.5})
    with Worker(ledger, backend.liveness(ttl=1.0)) as worker:
        hung, ticking, other = (worker.claim(j) for j in ("hung", "ticking", "other"))
        projector = RecoveryProjector(ledger, backend.liveness(ttl=1.0), policy, grace=0)
        for _ in range(4):
            time.sleep(0.25)
            worker.heartbeat(ticking)
        (recovery,) = projector.run_once()
    assert (recovery.job_id, recovery.reason) == ("hung", "heartbeat-timeout")
    assert ledger.status("ticking").state != "abandoned"
    assert ledger.status("other").state != "abandoned"
    assert hung.job_id == "hung"
    assert other.job_id == "other"


def test_mass_death_pauses_abandonment(backend: Backend) -> None:
    # 1 s, not 0.6 s: with 0.6 s it failed once on SQLite leases in a loaded parallel run,
    # where a stall of 0.15 s (BLOCKED_SHARE of the TTL) already makes a sweep distrust lapses.
    ttl = 1.0
    liveness = backend.liveness(ttl=ttl)
    holders = [info() for _ in range(4)]
    ledger = backend.ledger
    for n, holder in enumerate(holders):
        liveness.register(holder)
        ledger.enqueue(f"job-{n}")
        ledger.claim(f"job-{n}", holder.identity)
    projector = RecoveryProjector(
        ledger, liveness, grace=0, mass_death_share=0.5, mass_death_minimum=3
    )
    assert projector.run_once() == []  # all alive: the baseline
    time.sleep(ttl + 0.2)  # all four lapse at once
    assert projector.run_once() == []
    assert projector.counters.paused_sweeps == 1
    assert {s.state for s in ledger.jobs()} == {"claimed"}
    time.sleep(ttl + 0.1)  # after one full TTL they are still gone: now they count as dead
    assert len(projector.run_once()) == 4


def test_a_young_redis_pauses_a_new_projector(
    redis_url: str, sqlite_template: Path, tmp_path: Path
) -> None:
    """A projector that starts right after Redis (re)started waits until a TTL has passed."""
    shutil.copy(sqlite_template, tmp_path / "l.db")
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    prefix = f"jobledger-test-{new_identity()[-8:]}"
    fresh = RedisLiveness(redis_url, ttl=0.5, prefix=prefix)  # no epoch yet: a new Redis
    ledger.enqueue("j")
    ledger.claim("j", new_identity())  # a holder with no record at all
    projector = RecoveryProjector(ledger, fresh, grace=0)
    try:
        assert projector.run_once() == []
        assert projector.counters.paused_sweeps == 1
        time.sleep(0.6)
        assert [r.job_id for r in projector.run_once()] == ["j"]
    finally:
        fresh.client.delete(*fresh.client.scan_iter(match="{" + prefix + "}*"))
        ledger.close()


def test_memory_follows_live_processes_not_every_process_seen(backend: Backend) -> None:
    """Short-lived workers (RQ's work horses make one per job) leave nothing behind."""
    ledger = backend.ledger
    liveness = backend.liveness(ttl=5.0)
    projector = RecoveryProjector(ledger, liveness, interval=0.1)
    ledger.enqueue_many(f"short-{n}" for n in range(300))
    with Worker(ledger, liveness) as long_lived:
        long_lived.claim("short-0")
        for n in range(1, 300):
            with Worker(ledger, liveness) as worker:
                worker.complete(worker.claim(f"short-{n}"))
                if n % 10 == 0:
                    projector.run_once()
        projector.run_once()
        assert set(projector._expiry) <= {long_lived.identity}
