"""CeleryTarget: a requeued task is published again as recorded, or skipped if it cannot be."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from jobledger import Ledger, RecoveryPolicy, handoff
from jobledger.identity import new_identity
from jobledger.integrations.celery import CeleryTarget


def _requeued(ledger: Ledger, job_id: str, queue: str, data: object) -> None:
    """Enqueued as record(app) would, then abandoned by a dead holder and requeued."""
    ledger.enqueue(job_id, queue=queue, data=data)
    claim = ledger.claim(job_id, new_identity())
    ledger.abandon(job_id, claim.token, "holder died", policy=RecoveryPolicy())


@pytest.fixture
def broker(redis_url: str) -> Iterator[tuple[Celery, redis.Redis, str]]:
    queue = f"jl-celery-target-{secrets.token_hex(4)}"  # a key of our own on the shared Redis
    app = Celery("jl_target", broker=redis_url)
    with redis.Redis.from_url(redis_url) as client:
        yield app, client, queue
        client.delete(queue)
    app.close()


def test_requeued_task_is_published_again_with_its_id_name_arguments_and_queue(
    ledger: Ledger, broker: tuple[Celery, redis.Redis, str]
) -> None:
    app, client, queue = broker
    recorded = {"celery_task": "shop.invoice", "redeliverable": True}
    _requeued(ledger, "t-1", queue, {**recorded, "args": [42], "kwargs": {"to": "ann"}})

    CeleryTarget(app, ledger).deliver(ledger.status("t-1"))

    (raw,) = client.lrange(queue, 0, -1)
    message = json.loads(raw)
    assert message["headers"]["id"] == "t-1"
    assert message["headers"]["task"] == "shop.invoice"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([42], {"to": "ann"})
    # The requeued row rides along: the worker claims from it without reading first.
    assert handoff.unpack(message["headers"][handoff.HEADER]) == ledger.status("t-1")


def test_task_without_stored_arguments_is_logged_and_not_published(
    ledger: Ledger, broker: tuple[Celery, redis.Redis, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, client, queue = broker
    _requeued(ledger, "t-2", queue, {"celery_task": "shop.invoice", "redeliverable": False})
    _requeued(ledger, "t-3", queue, {"recorded": "at first claim"})

    with caplog.at_level(logging.WARNING, logger="jobledger.integrations.celery"):
        target = CeleryTarget(app, ledger)
        target.deliver(ledger.status("t-2"))
        target.deliver(ledger.status("t-3"))

    assert client.llen(queue) == 0
    assert "job 't-2' has no redeliverable Celery message" in caplog.text
    assert "job 't-3' has no redeliverable Celery message" in caplog.text
