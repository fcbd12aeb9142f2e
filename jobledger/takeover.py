"""Ending a dead holder's claim: abandon it, then requeue the job if the policy allows.

Two processes end such claims: the recovery projector's sweep, and a worker
taking over a job that its job system redelivered. Both call
:func:`end_dead_claim`, so a job that kills every process that runs it (a poison
pill) is given up on after the same number of attempts whichever way it comes
back (and an AsyncWorker's takeover runs the same rule: :func:`end_dead_claim_steps`).
Whether the holder *is* dead is the caller's question; this only acts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import steps
from .errors import StaleClaim
from .ledger import Ledger
from .lifecycle import State
from .policy import RecoveryPolicy
from .records import JobStatus

# Every decision about a dead holder's claim logs under one name, whoever made it.
log = logging.getLogger("jobledger.recovery")


@dataclass(frozen=True, slots=True)
class Ended:
    """A dead holder's claim that was ended, and what became of its job."""

    status: JobStatus  # the job after the abandon (and the requeue, if there was one)
    max_attempts: int  # the policy's cap for the job's queue

    @property
    def requeued(self) -> bool:
        """Whether the job went back to its queue; else it stays abandoned for an operator."""
        return self.status.state == State.ENQUEUED


def end_dead_claim(
    ledger: Ledger,
    job_id: str,
    token: int,
    reason: str,
    *,
    by: str,
    policy: RecoveryPolicy,
) -> Ended | None:
    """Abandon claim ``token`` on ``job_id`` as ``by`` and requeue the job if ``policy`` allows.

    Both happen in one transaction (:meth:`Ledger.abandon`). ``None`` if the claim
    had already ended (completed, released, or ended by another process first).
    """
    return steps.drive(
        end_dead_claim_steps(job_id, token, reason, by=by, policy=policy), ledger=ledger
    )


def end_dead_claim_steps(
    job_id: str, token: int, reason: str, *, by: str, policy: RecoveryPolicy
) -> steps.Steps[Ended | None]:
    """:func:`end_dead_claim` as a rule (:mod:`jobledger.steps`), for sync and async callers."""
    try:
        after = yield steps.ledger("abandon", job_id, token, reason, process=by, policy=policy)
    except StaleClaim:
        log.info("job %r: claim %d already ended; nothing to do", job_id, token)
        return None
    ended = Ended(after, policy.attempts_for(after.queue))
    if not ended.requeued:
        log.warning("job %r reached %d attempts: left abandoned", job_id, ended.max_attempts)
    return ended
