"""Many OS processes racing to claim the same jobs: each job is claimed exactly once."""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter

import pytest

from jobledger import Ledger
from jobledger.errors import AlreadyClaimed
from jobledger.identity import new_identity

PROCESSES = 8
JOBS = 500


def _claim_everything(url: str, seed: int, start: multiprocessing.synchronize.Event) -> list[str]:
    ledger = Ledger(url)
    me = new_identity()
    ids = [f"race-{i}" for i in range(JOBS)]
    random.Random(seed).shuffle(ids)
    won = []
    start.wait()
    for job_id in ids:
        try:
            ledger.claim(job_id, me)
        except AlreadyClaimed:
            continue
        won.append(job_id)
    ledger.close()
    return won


@pytest.mark.slow
def test_eight_processes_claim_each_job_exactly_once(postgres_url: str) -> None:
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    with Ledger(postgres_url) as ledger:
        ledger.enqueue_many([f"race-{i}" for i in range(JOBS)])
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(PROCESSES) as pool:
        pending = [
            pool.apply_async(_claim_everything, (postgres_url, seed, start))
            for seed in range(PROCESSES)
        ]
        start.set()
        results = [p.get(timeout=240) for p in pending]

    wins = Counter(job_id for won in results for job_id in won)
    assert len(wins) == JOBS
    assert set(wins.values()) == {1}
    assert sum(1 for won in results if won) > 1  # the race was real: several processes won some
    with Ledger(postgres_url) as ledger:
        statuses = list(ledger.jobs())
        assert {s.state for s in statuses} == {"claimed"}
        assert {s.attempt for s in statuses} == {1}
        for job_id in ("race-0", "race-250", "race-499"):
            assert [e.type for e in ledger.history(job_id)] == ["enqueued", "claimed"]
