"""The async API on real databases and Redis: mixed with the sync one, racing, cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from jobledger import Ledger, RecoveryPolicy
from jobledger.aio import AsyncLedger, AsyncRedisLiveness, AsyncSqlLiveness, AsyncWorker
from jobledger.aio.liveness import AsyncLiveness
from jobledger.database import engine_for
from jobledger.errors import (
    AlreadyClaimed,
    ConfigurationError,
    InvalidTransition,
    SchemaMissing,
    StaleClaim,
    UnknownJob,
)
from jobledger.identity import new_identity

A, B = new_identity(), new_identity()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- one ledger, two APIs ---------------------------------------------------------------------


def test_jobs_cross_between_the_async_and_the_sync_api(database_url: str) -> None:
    sync = Ledger(database_url, heartbeat_interval=0)

    async def story() -> None:
        async with AsyncLedger(database_url, heartbeat_interval=0) as ledger:
            await ledger.enqueue("from-async", queue="q", data={"n": 1})
            sync.enqueue("from-sync", queue="q", data={"n": 2})
            claimed_sync = sync.claim("from-async", A)
            claimed_async = await ledger.claim("from-sync", B)
            assert await ledger.heartbeat(claimed_sync, progress={"half": True})
            sync.heartbeat(claimed_async)
            await ledger.complete(claimed_sync, result={"ok": 1})
            sync.fail(claimed_async, "boom")
            await ledger.requeue("from-sync")
            again = sync.claim("from-sync", A)
            with pytest.raises(StaleClaim):
                await ledger.release(claimed_async)  # the old claim: refused and recorded
            await ledger.release(again, reason="shutting down")
            await ledger.enqueue_many(["bulk-1", ("bulk-2", {"x": [1, 2]})], queue="q")
            # A row handed over (as a job system's message carries it): claimed unread where
            # the database allows; a stale one costs a read and claims all the same.
            handed = sync.status("bulk-1")
            stale = await ledger.claim("bulk-1", A, seen=handed)
            await ledger.release(stale)
            again_by_row = await ledger.claim("bulk-1", B, seen=handed)
            assert again_by_row.attempt == 2
            await ledger.complete(again_by_row)
            assert sync.status("bulk-2").state == "enqueued"
            assert (await ledger.history("from-async")) == sync.history("from-async")
            assert [s async for s in ledger.jobs(queue="q")] == list(sync.jobs(queue="q"))
            assert (await ledger.verify()).ok

    try:
        run(story())
        assert [e.type for e in sync.history("from-sync")] == [
            "enqueued",
            "claimed",
            "heartbeat",
            "failed",
            "requeued",
            "claimed",
            "rejected",
            "released",
        ]
        assert sync.verify().ok
    finally:
        sync.close()


def test_the_async_ledger_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="async"):
        AsyncLedger("sqlite://")  # in memory: every connection would see its own database
    with pytest.raises(ConfigurationError):
        AsyncLedger("mysql://localhost/x")  # no async driver here (nor MySQLdb)

    async def missing() -> None:
        async with AsyncLedger(f"sqlite:///{tmp_path / 'absent.db'}") as ledger:
            with pytest.raises(SchemaMissing):
                await ledger.status("x")

    run(missing())
    assert not (tmp_path / "absent.db").exists()


def test_unknown_and_illegal_commands_raise_the_sync_errors(database_url: str) -> None:
    async def story() -> None:
        async with AsyncLedger(database_url) as ledger:
            with pytest.raises(UnknownJob):
                await ledger.claim("nobody", A)
            await ledger.enqueue("j")
            await ledger.cancel("j")
            with pytest.raises(InvalidTransition):
                await ledger.claim("j", A)
            with pytest.raises(ValueError, match="unknown state"):
                ledger.jobs(state="sleeping")

    run(story())


# -- races --------------------------------------------------------------------------------------

JOBS = [f"race-{i}" for i in range(50)]
CONTENDERS = 200


async def _race(url: str, seed: int, ready: Any = None) -> list[str | None]:
    """``CONTENDERS`` coroutines, each claiming 5 of the jobs (20 contenders per job);
    with ``ready`` (a barrier), once every racing process has connected."""
    async with AsyncLedger(url) as ledger:
        await asyncio.gather(*(ledger.status(JOBS[0]) for _ in range(10)))  # connect first
        if ready is not None:
            await asyncio.to_thread(ready.wait)
        start = asyncio.Event()

        async def contender(n: int) -> list[str | None]:
            me = new_identity()
            mine = [JOBS[(n + 10 * k) % len(JOBS)] for k in range(5)]
            random.Random(seed * 1000 + n).shuffle(mine)
            await start.wait()
            won: list[str | None] = []
            for job_id in mine:
                try:
                    await ledger.claim(job_id, me)
                    won.append(job_id)
                except AlreadyClaimed:
                    won.append(None)
            return won

        tasks = [asyncio.create_task(contender(n)) for n in range(CONTENDERS)]
        await asyncio.sleep(0)
        start.set()
        results = await asyncio.gather(*tasks)
        assert ledger.connections[0] == ledger.connections[1]  # none left in use
    return [outcome for won in results for outcome in won]


def test_two_hundred_coroutines_claim_each_job_exactly_once(database_url: str) -> None:
    with Ledger(database_url) as ledger:
        ledger.enqueue_many(JOBS)
        outcomes = run(_race(database_url, seed=1))
        wins = Counter(job_id for job_id in outcomes if job_id is not None)
        assert wins == dict.fromkeys(JOBS, 1)
        assert outcomes.count(None) == CONTENDERS * 5 - len(JOBS)  # every loser: AlreadyClaimed
        assert {(s.state, s.attempt) for s in ledger.jobs()} == {("claimed", 1)}
        assert ledger.verify().ok


def _race_in_a_process(url: str, seed: int, ready: Any) -> list[str | None]:
    return run(_race(url, seed, ready))


@pytest.mark.slow
def test_four_processes_of_two_hundred_coroutines_claim_each_job_once(postgres_url: str) -> None:
    import multiprocessing

    from tests.conftest import truncate_all

    context = multiprocessing.get_context("spawn")
    winners = 0
    # On 2 CPUs one process can claim all 50 jobs before the others are scheduled: each
    # round must be correct, and in at least one of them the processes really raced.
    for _ in range(3):
        truncate_all(postgres_url)
        with Ledger(postgres_url) as ledger:
            ledger.enqueue_many(JOBS)
        ready = context.Manager().Barrier(4)
        with context.Pool(4) as pool:
            results = pool.starmap(
                _race_in_a_process, [(postgres_url, seed, ready) for seed in range(4)]
            )
        outcomes = [job_id for won in results for job_id in won if job_id is not None]
        assert Counter(outcomes) == dict.fromkeys(JOBS, 1)
        with Ledger(postgres_url) as ledger:
            assert ledger.verify().ok
        winners = sum(1 for won in results if any(won))
        if winners > 1:
            break
    assert winners > 1  # the race was real


# -- cancellation ---------------------------------------------------------------------------------


def _tagged(database_url: str, tag: str) -> str:
    """The URL with an application name on PostgreSQL, to find our sessions."""
    if database_url.startswith("postgresql"):
        return f"{database_url}?application_name={tag}"
    return database_url


def _sessions_in_a_transaction(database_url: str, tag: str) -> list[Any]:
    engine = engine_for(database_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT state FROM pg_stat_activity WHERE application_name = :tag "
                        "AND state LIKE 'idle in transaction%'"
                    ),
                    {"tag": tag},
                )
            )
    finally:
        engine.dispose()


def test_cancelled_commands_leave_no_half_written_job_and_no_open_transaction(
    database_url: str,
) -> None:
    """Commands cut off at many points (timeouts from 0 to a few ms, and cancel())."""
    jobs = [f"cut-{i}" for i in range(60)]
    policy = RecoveryPolicy(max_attempts=5)
    tag = f"aio-cancel-{secrets.token_hex(4)}"
    with Ledger(database_url) as sync:
        sync.enqueue_many(jobs)
        claims = {job_id: sync.claim(job_id, A) for job_id in jobs}

    async def story() -> None:
        async with AsyncLedger(_tagged(database_url, tag), pool_size=4) as ledger:
            # How long one command takes here: cut-offs are spread over 1.5 times that.
            await ledger.enqueue("probe")
            probe = await ledger.claim("probe", A)
            started = time.perf_counter()
            await ledger.abandon("probe", probe.token, "probe", A, policy)
            took = time.perf_counter() - started
            for n, job_id in enumerate(jobs):
                await ledger.status("probe")  # a warm connection again after a cut-off
                # abandon + requeue: two events that must land together or not at all
                command = ledger.abandon(job_id, claims[job_id].token, "cut", A, policy)
                if n % 10 == 9:
                    await command  # one in ten runs to the end
                elif n % 3 == 0:
                    task = asyncio.ensure_future(command)
                    for _ in range(n // 3):  # through a different await each time
                        await asyncio.sleep(0)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(took * 1.5 * n / len(jobs)):
                            await command
            open_, idle = ledger.connections
            assert open_ == idle  # nothing stuck in a command
            if not database_url.startswith("postgresql"):
                for conn in ledger._store.connections._idle:
                    assert not conn.in_transaction
            else:
                assert _sessions_in_a_transaction(database_url, tag) == []
            # Every connection left is usable, and no lock is held: a sync command gets through.
            with Ledger(database_url) as sync:
                sync.enqueue("after")
            assert (await ledger.status("after")).state == "enqueued"

    run(story())
    with Ledger(database_url) as sync:
        outcomes = Counter(len(sync.history(job_id)) for job_id in jobs)
        assert outcomes[2], "no command was cut off"
        assert outcomes[4] >= len(jobs) // 10
        for job_id in jobs:
            types = [e.type for e in sync.history(job_id)]
            assert types in (
                ["enqueued", "claimed"],
                ["enqueued", "claimed", "abandoned", "requeued"],
            )
        assert sync.verify().ok


# -- the AsyncWorker ------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "sql"])
def liveness_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    kind: str = request.param
    return kind


def _liveness(kind: str, ledger: AsyncLedger, redis_url: str | None, prefix: str) -> AsyncLiveness:
    if kind == "redis":
        assert redis_url is not None
        made = AsyncRedisLiveness(redis_url, ttl=1.0, prefix=prefix)
        # A Redis whose life began an hour ago (see tests/conftest.py's Backend): a new
        # epoch would pause takeovers for one TTL.
        born = int(time.time() * 1000) - 3_600_000
        made.refresher().client.set("{" + prefix + "}:epoch", f"settled@{born}")  # type: ignore[attr-defined]
        return made
    return AsyncSqlLiveness(ledger, ttl=1.0)


def test_async_worker_registers_works_takes_over_and_leaves(
    database_url: str, liveness_kind: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if liveness_kind == "redis" else None
    prefix = f"jobledger-test-{secrets.token_hex(6)}"

    async def story() -> None:
        async with AsyncLedger(database_url, heartbeat_interval=0) as ledger:
            liveness = _liveness(liveness_kind, ledger, redis_url, prefix)
            await ledger.enqueue_many(["a", "b", "orphan", "done"])
            ghost = new_identity()  # a holder that never registered: dead
            await ledger.claim("orphan", ghost)
            async with AsyncWorker(ledger, liveness, grace=0) as worker:
                assert (await liveness.alive([worker.identity]))[worker.identity]
                claim = await worker.claim("a")
                assert worker.held == [claim]
                assert await worker.heartbeat(claim, progress={"step": 1})
                await worker.complete(claim, result={"ok": True})
                assert worker.held == []
                taken = await worker.claim("orphan")
                assert taken.attempt == 2
                done = await worker.claim("done")
                await worker.complete(done)
                assert await worker.claim_delivery("done") is None  # a duplicate: skipped
                with pytest.raises(AlreadyClaimed):
                    await worker.claim("orphan")  # held by this live process
                await worker.claim("b")
            assert not (await liveness.alive([worker.identity]))[worker.identity]
            assert (await ledger.status("b")).state == "enqueued"  # released on the way out
            orphan = [e.type for e in await ledger.history("orphan")]
            assert orphan == ["enqueued", "claimed", "abandoned", "requeued", "claimed", "released"]
            assert (await ledger.history("done"))[-1].type == "rejected"
            if isinstance(liveness, AsyncRedisLiveness):
                keys = [key async for key in liveness.client.scan_iter(match="{" + prefix + "}*")]
                await liveness.client.delete(*keys)
            await liveness.close()

    run(story())


def test_async_commands_reconnect_after_every_session_is_terminated(postgres_url: str) -> None:
    """A database restart ends every session: held connections are replaced, nothing lost."""
    from tests.conftest import truncate_all

    truncate_all(postgres_url)

    def terminate_every_session() -> None:
        admin = engine_for(postgres_url)
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        admin.dispose()

    async def story() -> None:
        async with AsyncLedger(postgres_url, pool_size=3) as ledger:
            await ledger.enqueue_many(["a", "b", "c"])
            for job_id in ("a", "b", "c"):
                claim = await ledger.claim(job_id, A)
                terminate_every_session()  # the held connections die under the holder
                await ledger.complete(claim)
                terminate_every_session()
            assert {s.state async for s in ledger.jobs()} == {"completed"}
            assert (await ledger.verify()).ok

    run(story())
