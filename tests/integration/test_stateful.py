"""Random command sequences against the Ledger, compared with a plain in-memory model."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, multiple, rule

from jobledger import Claim, Ledger
from jobledger.errors import AlreadyClaimed, InvalidTransition, LedgerError, StaleClaim
from jobledger.identity import new_identity
from tests.aio_facade import Facade

PROCESSES = [new_identity() for _ in range(3)]


@dataclass
class ModelJob:
    """The lifecycle as a reader of DESIGN.md would write it, without the ledger's code."""

    state: str = "enqueued"
    version: int = 1
    attempt: int = 0
    token: int | None = None
    holder: str | None = None


HOLDER_MOVES = {
    "heartbeat": "claimed",
    "completed": "completed",
    "failed": "failed",
    "released": "enqueued",
}


class LedgerComparison(RuleBasedStateMachine):
    jobs = Bundle("jobs")
    claims = Bundle("claims")
    new_database: object = None  # set per test: () -> database URL
    open_ledger: object = None  # set per test: URL -> a Ledger (or AsyncLedger's facade)

    def __init__(self) -> None:
        super().__init__()
        url = type(self).new_database()  # type: ignore[misc]
        self.ledger = type(self).open_ledger(url)  # type: ignore[misc]
        self.model: dict[str, ModelJob] = {}

    def teardown(self) -> None:
        for job_id, expected in self.model.items():
            self.check(job_id)
            assert len(self.ledger.history(job_id)) == expected.version
        self.ledger.close()

    def check(self, job_id: str) -> None:
        got, want = self.ledger.status(job_id), self.model[job_id]
        assert (got.state, got.version, got.attempt) == (want.state, want.version, want.attempt)
        assert (got.claim_token, got.claimed_by) == (want.token, want.holder)

    def expect(self, job_id: str, error: type[LedgerError] | None, action: object) -> object:
        try:
            result = action() if callable(action) else None
        except LedgerError as exc:
            assert error is not None, f"unexpected {exc!r}"
            assert isinstance(exc, error), f"unexpected {exc!r}"
            return None
        assert error is None, f"expected {error.__name__}"
        return result

    @rule(target=jobs)
    def enqueue(self) -> str:
        job_id = f"job-{len(self.model)}"
        self.ledger.enqueue(job_id)
        self.model[job_id] = ModelJob()
        return job_id

    @rule(target=claims, job_id=jobs, process=st.sampled_from(PROCESSES))
    def claim(self, job_id: str, process: str) -> object:
        job = self.model[job_id]
        error = {"enqueued": None, "claimed": AlreadyClaimed}.get(job.state, InvalidTransition)
        claim = self.expect(job_id, error, lambda: self.ledger.claim(job_id, process))
        if claim is not None:
            job.version += 1
            job.state, job.attempt, job.token, job.holder = (
                "claimed",
                job.attempt + 1,
                job.version,
                process,
            )
            assert claim == Claim(job_id, job.version, job.attempt, process)
        self.check(job_id)
        return claim if claim is not None else multiple()

    @rule(claim=claims, event=st.sampled_from(sorted(HOLDER_MOVES)))
    def act_as_holder(self, claim: Claim, event: str) -> None:
        job = self.model[claim.job_id]
        stale = job.token != claim.token or job.holder != claim.process
        command = {
            "heartbeat": lambda: self.ledger.heartbeat(claim),
            "completed": lambda: self.ledger.complete(claim),
            "failed": lambda: self.ledger.fail(claim, "error"),
            "released": lambda: self.ledger.release(claim),
        }[event]
        self.expect(claim.job_id, StaleClaim if stale else None, command)
        job.version += 1  # either the event itself or the recorded rejection
        if not stale:
            job.state = HOLDER_MOVES[event]
            if job.state != "claimed":
                job.token = job.holder = None
        self.check(claim.job_id)

    @rule(claim=claims)
    def abandon(self, claim: Claim) -> None:
        job = self.model[claim.job_id]
        stale = job.token != claim.token
        self.expect(
            claim.job_id,
            StaleClaim if stale else None,
            lambda: self.ledger.abandon(claim.job_id, claim.token, reason="test"),
        )
        if not stale:
            job.version += 1
            job.state, job.token, job.holder = "abandoned", None, None
        self.check(claim.job_id)

    @rule(job_id=jobs)
    def requeue(self, job_id: str) -> None:
        job = self.model[job_id]
        legal = job.state in ("abandoned", "failed")
        self.expect(
            job_id, None if legal else InvalidTransition, lambda: self.ledger.requeue(job_id)
        )
        if legal:
            job.version, job.state = job.version + 1, "enqueued"
        self.check(job_id)

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        job = self.model[job_id]
        legal = job.state == "enqueued"
        self.expect(
            job_id, None if legal else InvalidTransition, lambda: self.ledger.cancel(job_id)
        )
        if legal:
            job.version, job.state = job.version + 1, "cancelled"
        self.check(job_id)


@pytest.fixture(params=["sync", "async"])
def open_ledger(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    """URL -> the sync Ledger, or AsyncLedger behind its facade (tests/aio_facade.py)."""
    if request.param == "sync":
        return lambda url: Ledger(url, heartbeat_interval=0)
    from jobledger.aio import AsyncLedger

    loops = request.getfixturevalue("loop_thread")

    async def opened(url: str) -> AsyncLedger:
        return AsyncLedger(url, heartbeat_interval=0)

    return lambda url: Facade(loops.run(opened(url)), loops)


def _run(new_database: object, examples: int, open_ledger: Callable[[str], Any]) -> None:
    LedgerComparison.new_database = new_database
    LedgerComparison.open_ledger = staticmethod(open_ledger)
    test_case = LedgerComparison.TestCase
    test_case.settings = settings(
        max_examples=examples,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    test_case().runTest()


def test_sqlite_matches_the_model(sqlite_template: Path, open_ledger: Callable[[str], Any]) -> None:
    folder = Path(tempfile.mkdtemp())

    def new_database() -> str:
        path = folder / f"{len(list(folder.iterdir()))}.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"

    try:
        _run(new_database, examples=40, open_ledger=open_ledger)
    finally:
        shutil.rmtree(folder)


@pytest.mark.slow
def test_postgresql_matches_the_model(postgres_url: str, open_ledger: Callable[[str], Any]) -> None:
    from tests.conftest import truncate_all

    def new_database() -> str:
        truncate_all(postgres_url)
        return postgres_url

    _run(new_database, examples=25, open_ledger=open_ledger)
