"""What happens to a job whose holder died: requeued, or left for an operator.

One policy serves both ways a dead holder's claim ends: the recovery projector's
sweep and a worker's takeover when a job system redelivers the job. Were they to
differ, a job that kills every process that runs it (a poison pill) would be
retried forever by redelivery while the projector gives up on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import bounds


@dataclass(frozen=True)
class RecoveryPolicy:
    """What happens to an abandoned job, per queue.

    A job is requeued while its attempt count is below ``max_attempts`` (the
    poison-pill cap), else it stays ``abandoned`` for an operator. With a
    ``heartbeat_timeout``, a job held by a *live* process but not heartbeated
    for that many seconds is abandoned too (reason ``heartbeat-timeout``).
    """

    max_attempts: int = 3
    max_attempts_by_queue: Mapping[str, int] = field(default_factory=dict)
    heartbeat_timeout: float | None = None
    heartbeat_timeout_by_queue: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """``ConfigurationError`` for a cap below 1 or a timeout that is not a positive duration."""
        bounds.count(self.max_attempts, "max_attempts")
        for queue, cap in self.max_attempts_by_queue.items():
            bounds.count(cap, f"max_attempts of queue {queue!r}")
        if self.heartbeat_timeout is not None:
            bounds.seconds(self.heartbeat_timeout, "heartbeat_timeout")
        for queue, timeout in self.heartbeat_timeout_by_queue.items():
            bounds.seconds(timeout, f"heartbeat_timeout of queue {queue!r}")

    def attempts_for(self, queue: str) -> int:
        return self.max_attempts_by_queue.get(queue, self.max_attempts)

    def requeues(self, queue: str, attempt: int) -> bool:
        """Whether a job of ``queue`` abandoned on its ``attempt``-th claim goes back."""
        return attempt < self.attempts_for(queue)

    def timeout_for(self, queue: str) -> float | None:
        return self.heartbeat_timeout_by_queue.get(queue, self.heartbeat_timeout)
