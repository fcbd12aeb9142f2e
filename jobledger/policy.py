"""What happens to a job whose holder died: requeued, or left for an operator.

One policy serves both ways a dead holder's claim ends: the recovery projector's
sweep and a worker's takeover when a job system redelivers the job. Were they to
differ, a job that kills every process that runs it (a poison pill) would be
retried forever by redelivery while the projector gives up on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
        attempts = [self.max_attempts, *self.max_attempts_by_queue.values()]
        timeouts = [self.heartbeat_timeout, *self.heartbeat_timeout_by_queue.values()]
        if any(a < 1 for a in attempts):
            raise ValueError("max_attempts must be at least 1")
        if any(t is not None and t <= 0 for t in timeouts):
            raise ValueError("heartbeat timeouts must be positive")

    def attempts_for(self, queue: str) -> int:
        return self.max_attempts_by_queue.get(queue, self.max_attempts)

    def requeues(self, queue: str, attempt: int) -> bool:
        """Whether a job of ``queue`` abandoned on its ``attempt``-th claim goes back."""
        return attempt < self.attempts_for(queue)

    def timeout_for(self, queue: str) -> float | None:
        return self.heartbeat_timeout_by_queue.get(queue, self.heartbeat_timeout)
