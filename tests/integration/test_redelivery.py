"""The redelivery outbox: which requeued jobs are delivered, and a failed delivery holds it back."""

from __future__ import annotations

import pytest

from jobledger import JobStatus, Ledger, RecoveryPolicy
from jobledger.errors import RedeliveryFailed
from jobledger.identity import new_identity
from jobledger.redelivery import Redeliverer, RedeliveryTarget
from tests.helpers import run_settled

DEAD = new_identity()


class Inbox:
    """A job system of our own: keeps what it was handed, refuses while ``down``."""

    name = "inbox"

    def __init__(self) -> None:
        self.received: list[str] = []
        self.down = False

    def deliver(self, job: JobStatus) -> None:
        if self.down:
            raise ConnectionError("inbox is down")
        self.received.append(job.job_id)


def _requeue_after_death(ledger: Ledger, job_id: str) -> None:
    ledger.enqueue(job_id, queue="q")
    claim = ledger.claim(job_id, DEAD)
    ledger.abandon(job_id, claim.token, "holder died", policy=RecoveryPolicy())


def test_a_target_is_a_small_protocol() -> None:
    assert isinstance(Inbox(), RedeliveryTarget)


def test_each_requeued_job_is_delivered_once_and_others_never(ledger: Ledger) -> None:
    ledger.enqueue("never-requeued")
    _requeue_after_death(ledger, "orphan")
    _requeue_after_death(ledger, "operator")
    claim = ledger.claim("operator", new_identity())
    ledger.fail(claim, error="boom")
    ledger.requeue("operator", reason="try again")  # an operator's requeue is delivered too
    inbox = Inbox()
    redeliverer = Redeliverer(ledger, inbox)
    run_settled(redeliverer)
    assert inbox.received == ["orphan", "operator"]
    run_settled(redeliverer)
    assert inbox.received == ["orphan", "operator"]  # past the checkpoint: not again


def test_a_requeue_already_acted_on_is_not_delivered(ledger: Ledger) -> None:
    _requeue_after_death(ledger, "claimed-since")
    ledger.claim("claimed-since", new_identity())  # the job system ran it already
    _requeue_after_death(ledger, "cancelled-since")
    ledger.cancel("cancelled-since")
    inbox = Inbox()
    run_settled(Redeliverer(ledger, inbox))
    assert inbox.received == []


def test_a_failed_delivery_never_moves_past_the_event(ledger: Ledger) -> None:
    _requeue_after_death(ledger, "first")
    inbox = Inbox()
    inbox.down = True
    redeliverer = Redeliverer(ledger, inbox)
    before = redeliverer.catchup.checkpoint()
    with pytest.raises(RedeliveryFailed, match="'first': redelivery to inbox failed"):
        run_settled(redeliverer)
    assert redeliverer.catchup.checkpoint() == before
    _requeue_after_death(ledger, "second")
    inbox.down = False
    run_settled(redeliverer)
    assert inbox.received == ["first", "second"]


def test_each_target_keeps_its_own_checkpoint(ledger: Ledger) -> None:
    _requeue_after_death(ledger, "orphan")
    inbox = Inbox()
    other = Inbox()
    other.name = "other"
    run_settled(Redeliverer(ledger, inbox))
    run_settled(Redeliverer(ledger, other))
    assert inbox.received == other.received == ["orphan"]
