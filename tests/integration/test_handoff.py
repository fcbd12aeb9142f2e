"""A claim from the row the publisher saw (``Ledger.claim(..., seen=row)``), and an enqueue:
one round trip each on PostgreSQL.

The row a job system's message carries is a hint: the write is guarded by every column
of it and by the database clock. These tests pin down that a current row saves the
read, and that a stale or forged one writes nothing wrong: the claim falls back to
reading the job, and the history stays a sealed, legal chain whose projection agrees.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job

from jobledger import Ledger, RecoveryPolicy, handoff
from jobledger.errors import AlreadyClaimed, DuplicateJob
from jobledger.identity import new_identity
from jobledger.integrations.rq import LedgerQueue
from jobledger.records import JobStatus
from jobledger.store import CLOCK_TOLERANCE

A, B = new_identity("host-a"), new_identity("host-b")


def _sent_by(sent: list[str], command: Callable[[], object]) -> list[str]:
    sent.clear()
    command()
    return list(sent)


def _is_one_write(sent: list[str]) -> bool:
    return len(sent) == 1 and sent[0].lstrip().upper().startswith("WITH")


def test_a_worker_claims_from_the_publishers_row_in_one_statement(
    pg_url: str, statements: list[str]
) -> None:
    producer, worker = Ledger(pg_url), Ledger(pg_url, heartbeat_interval=0)
    producer.enqueue("first")  # a fresh Ledger reads once: that measures the clock
    rows = {job: producer.enqueue(job) for job in ("a", "b")}
    assert _is_one_write(_sent_by(statements, lambda: producer.enqueue("c")))
    worker.warm_up()  # measures the worker's clock offset too

    claims = []
    for job, row in rows.items():
        sent = _sent_by(statements, lambda j=job, r=row: claims.append(worker.claim(j, A, seen=r)))
        assert _is_one_write(sent), sent
    assert _is_one_write(_sent_by(statements, lambda: worker.complete(claims[0], result=1)))
    assert [e.type for e in worker.history("a")] == ["enqueued", "claimed", "completed"]
    assert claims[1].attempt == 1
    assert worker.status("b").claimed_by == A
    assert worker.verify().ok
    producer.close()
    worker.close()


def test_a_stale_row_claims_nothing_and_says_who_holds_the_job(
    database_url: str, statements: list[str]
) -> None:
    producer, worker = Ledger(database_url), Ledger(database_url)
    row = producer.enqueue("j")
    producer.claim("j", B)  # another worker was first; the message's row is out of date
    worker.warm_up()
    with pytest.raises(AlreadyClaimed) as refused:
        worker.claim("j", A, seen=row)
    assert refused.value.holder == B
    assert [e.type for e in worker.history("j")] == ["enqueued", "claimed"]
    assert worker.verify().ok
    producer.close()
    worker.close()


def test_a_row_seen_before_a_requeue_claims_the_next_attempt(database_url: str) -> None:
    ledger = Ledger(database_url)
    first = ledger.enqueue("j")
    claim = ledger.claim("j", B)
    ledger.abandon("j", claim.token, "holder died", policy=RecoveryPolicy())
    again = ledger.claim("j", A, seen=first)
    assert again.attempt == 2
    assert [e.type for e in ledger.history("j")][-1] == "claimed"
    assert ledger.verify().ok
    ledger.close()


_FORGERIES: dict[str, Callable[[JobStatus], Any]] = {
    "queue": lambda row: "elsewhere",
    "state": lambda row: "failed",
    "attempt": lambda row: row.attempt + 5,
    "claim_token": lambda row: 99,
    "enqueued_at": lambda row: row.enqueued_at - timedelta(days=1),
    "updated_at": lambda row: row.updated_at + CLOCK_TOLERANCE / 2,
    "last_error": lambda row: "made up",
    "last_hash": lambda row: "0" * 64,
}


@pytest.mark.parametrize("column", sorted(_FORGERIES))
def test_a_forged_row_writes_nothing_of_its_own(
    database_url: str, statements: list[str], column: str
) -> None:
    """Every column is guarded: a row off in any one of them costs a read, and the claim
    is decided on the row read, so the history and the projection stay true."""
    producer, worker = Ledger(database_url), Ledger(database_url)
    row = producer.enqueue("j", queue="mail")
    worker.warm_up()
    forged = dataclasses.replace(row, **{column: _FORGERIES[column](row)})

    sent = _sent_by(statements, lambda: worker.claim("j", A, seen=forged))
    assert not _is_one_write(sent)
    claimed = worker.history("j")[-1]
    assert (claimed.type, claimed.data, claimed.prev_hash) == (
        "claimed",
        {"attempt": 1},
        row.last_hash,
    )
    status = worker.status("j")
    assert (status.queue, status.attempt, status.last_error) == ("mail", 1, None)
    assert status.enqueued_at == row.enqueued_at
    assert worker.verify().ok  # chains, paths, and the projection as a rebuild folds it
    producer.close()
    worker.close()


def test_a_row_of_another_job_is_refused_before_anything_is_written(database_url: str) -> None:
    ledger = Ledger(database_url)
    row = ledger.enqueue("a")
    ledger.enqueue("b")
    with pytest.raises(ValueError, match="'a'"):
        ledger.claim("b", A, seen=row)
    assert ledger.status("b").state == "enqueued"
    ledger.close()


def test_an_enqueue_of_an_existing_id_writes_nothing_after_its_one_try(
    pg_url: str, statements: list[str]
) -> None:
    ledger = Ledger(pg_url)
    ledger.enqueue("warm")
    ledger.enqueue("j", data={"n": 1})
    with pytest.raises(DuplicateJob):
        ledger.enqueue("j", data={"n": 2})
    assert [e.data for e in ledger.history("j")] == [{"queue": "default", "data": {"n": 1}}]
    assert ledger.verify().ok
    ledger.close()


def test_rq_carries_the_row_from_ledger_queue_to_the_worker(ledger: Ledger, redis_url: str) -> None:
    name = f"jl-handoff-{secrets.token_hex(4)}"
    with redis.Redis.from_url(redis_url) as connection:
        queue = LedgerQueue(name, connection=connection, ledger=ledger)
        job = queue.enqueue("builtins.print", "hi")
        try:
            fetched = Job.fetch(job.id, connection=connection)  # as the worker dequeues it
            seen = handoff.seen_in(fetched.meta.get(handoff.HEADER), job.id)
            assert seen == ledger.status(job.id)
        finally:
            job.delete()
            Queue(name, connection=connection).delete(delete_jobs=True)


_PUBLISH = """
import sys
from celery import Celery
from jobledger.integrations.celery import record
app = Celery("jl_handoff", broker=sys.argv[1])
record(app)  # the database from JOBLEDGER_DATABASE_URL
app.send_task("shop.invoice", args=[42], task_id=sys.argv[2], queue=sys.argv[3])
"""


def test_celery_carries_the_row_in_the_message_headers(
    ledger: Ledger, database_url: str, redis_url: str
) -> None:
    """Published by a process of its own: ``record(app)`` connects process-wide signals."""
    queue, task_id = f"jl-handoff-{secrets.token_hex(4)}", f"t-{secrets.token_hex(4)}"
    with redis.Redis.from_url(redis_url) as client:
        try:
            args = [sys.executable, "-c", _PUBLISH, redis_url, task_id, queue]
            env = {**os.environ, "JOBLEDGER_DATABASE_URL": database_url}
            subprocess.run(args, check=True, timeout=60, env=env)
            (raw,) = client.lrange(queue, 0, -1)
        finally:
            client.delete(queue)
    headers = json.loads(raw)["headers"]
    assert handoff.unpack(headers[handoff.HEADER]) == ledger.status(task_id)
