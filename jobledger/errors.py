"""Every exception jobledger raises on purpose.

All of them derive from :class:`LedgerError`, so ``except LedgerError`` catches
every expected failure while real bugs still surface as themselves. Messages
name the job, its state, the event that was tried and the holder, because the
person reading them is usually an operator at 3 a.m. with only the log line.
"""

from __future__ import annotations

from typing import Any, TypeVar

ErrorT = TypeVar("ErrorT", bound="LedgerError")


class LedgerError(Exception):
    """Base class of every jobledger error.

    Errors pickle and compare by value (type, ``args`` and attributes), so one
    raised in an audit worker process reaches its coordinator as itself.
    """

    #: Jobs that ``enqueue_many`` committed in earlier batches before this error stopped it.
    committed: int = 0

    def __str__(self) -> str:
        text = super().__str__()
        if self.committed:
            return f"{text} ({self.committed} jobs of earlier batches were enqueued)"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls ``type(self)(*self.args)``, but ``args`` holds
        # the message, not what our ``__init__`` methods take: rebuild without them.
        return _unpickled, (type(self), self.args, self.__dict__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LedgerError):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.args == other.args
            and self.__dict__ == other.__dict__
        )

    def __hash__(self) -> int:
        return hash((type(self), str(self)))


def _unpickled(cls: type[ErrorT], args: tuple[Any, ...], attributes: dict[str, Any]) -> ErrorT:
    error = cls.__new__(cls, *args)  # sets ``args``; no ``__init__``
    error.__dict__.update(attributes)
    return error


class InvalidTransition(LedgerError):
    """The lifecycle machine does not allow this event from the job's state."""

    def __init__(self, job_id: str, state: str, event: str) -> None:
        self.job_id, self.state, self.event = job_id, str(state), str(event)
        super().__init__(
            f"job {job_id!r}: cannot apply {self.event!r} to a job in state {self.state!r}"
        )


class UnknownJob(LedgerError, LookupError):
    """No job with this id has ever been enqueued."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} does not exist")


class DuplicateJob(LedgerError):
    """A job with this id already exists; job ids are never reused."""

    def __init__(self, job_ids: list[str], committed: int = 0) -> None:
        self.job_ids = job_ids
        self.committed = committed
        shown = ", ".join(repr(j) for j in job_ids[:5])
        more = f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else ""
        super().__init__(f"job {shown}{more} already exists")


class ConcurrencyConflict(LedgerError):
    """Another writer appended to the job between our read and our write."""

    def __init__(self, job_id: str, expected_version: int, event: str) -> None:
        self.job_id, self.expected_version, self.event = job_id, expected_version, str(event)
        super().__init__(
            f"job {job_id!r}: {self.event!r} at version {expected_version} kept losing "
            "races to other writers"
        )


class AlreadyClaimed(LedgerError):
    """The job is claimed by another process (a lost claim race, or a live holder)."""

    def __init__(
        self, job_id: str, holder: str | None, token: int | None, held_for: float | None = None
    ) -> None:
        self.job_id, self.holder, self.token = job_id, holder, token
        self.held_for = held_for  # seconds since the claim, by the database clock
        super().__init__(f"job {job_id!r} is already claimed by {holder} (token {token})")


class StaleClaim(LedgerError):
    """The claim token presented is not the job's current claim token.

    The holder's claim was abandoned (and perhaps given to someone else) or has
    already ended. The refusal is itself recorded as a ``rejected`` event.
    """

    def __init__(
        self,
        job_id: str,
        event: str,
        token: int,
        current_token: int | None,
        state: str,
        process: str | None,
    ) -> None:
        self.job_id, self.event, self.token = job_id, str(event), token
        self.current_token, self.state, self.process = current_token, str(state), process
        now_held = (
            f"current claim token is {current_token}"
            if current_token is not None
            else "no claim is current"
        )
        super().__init__(
            f"job {job_id!r}: {self.event!r} by {process} refused: token {token} is stale "
            f"(job is {self.state!r}, {now_held})"
        )


class InvalidPayload(LedgerError, ValueError):
    """Event data that cannot be stored as JSON exactly as given."""


class InvalidIdentity(LedgerError, ValueError):
    """A process identity that is not ``hostname:pid:nonce``."""


class DatabaseUnavailable(LedgerError):
    """The database cannot be reached or refused the connection."""


class SchemaMissing(LedgerError):
    """The database is reachable but has no (or an outdated) jobledger schema."""


class LivenessUnavailable(LedgerError):
    """The liveness backend (Redis, or the lease table) cannot be reached."""


class CorruptHistory(LedgerError):
    """Stored events are not a legal, intact history (see ``Ledger.verify``).

    ``reason`` is the message without the job and version, which an audit's
    problem lists separately.
    """

    def __init__(self, job_id: str, version: int | None, reason: str) -> None:
        self.job_id, self.version, self.reason = job_id, version, reason
        where = f"job {job_id!r}" if version is None else f"job {job_id!r} version {version}"
        super().__init__(f"{where}: {reason}")


class ConfigurationError(LedgerError, ValueError):
    """A setting that cannot work: a malformed URL, an unknown driver, a bad option."""


class InvalidJobId(LedgerError, ValueError):
    """A job id or queue name that cannot be stored (empty, too long, not text)."""


class NotClaiming(LedgerError):
    """The worker is quiet, stopping, or presumed dead, so it takes no new jobs."""


class AttemptsExhausted(LedgerError):
    """A takeover abandoned a dead holder's claim on the job's last allowed attempt.

    The job stays ``abandoned`` for an operator, as the recovery projector would
    leave it (``RecoveryPolicy.max_attempts``); nothing was claimed.
    """

    def __init__(self, job_id: str, holder: str, attempt: int, max_attempts: int) -> None:
        self.job_id, self.holder = job_id, holder
        self.attempt, self.max_attempts = attempt, max_attempts
        super().__init__(
            f"job {job_id!r}: holder {holder} died on attempt {attempt} of {max_attempts}; "
            "abandoned and left for an operator (requeue it to run it again)"
        )


class RedeliveryFailed(LedgerError):
    """A redelivery target could not hand a requeued job back; retried from this job."""

    def __init__(self, job_id: str, target: str, cause: BaseException) -> None:
        self.job_id, self.target = job_id, target
        super().__init__(
            f"job {job_id!r}: redelivery to {target} failed: {type(cause).__name__}: {cause}"
        )


class InvalidHead(LedgerError, ValueError):
    """A published anchor head that is not ``SEQ:DIGEST`` (a positive integer, 64 hex digits)."""


class ArchiveError(LedgerError):
    """Archival cannot start or go on: a bad cutoff, an unwritable file, another archive's file.

    Raised before anything is deleted, or (resuming) before the next batch is.
    """
