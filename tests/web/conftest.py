"""Fixtures of the web tests: a told story on each backend, and the view built over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobledger import Ledger
from jobledger.liveness import Liveness, SqlLiveness
from jobledger.web.reads import Settings
from jobledger.web.serve import View, build

from .story import Story, tell


@pytest.fixture
def told(ledger: Ledger) -> Iterator[tuple[Ledger, Liveness, Story]]:
    """The story, on SQLite and on PostgreSQL, with SQL leases for liveness."""
    liveness = SqlLiveness(ledger, ttl=15.0)
    try:
        yield ledger, liveness, tell(ledger, liveness)
    finally:
        liveness.close()


@pytest.fixture
def view(told: tuple[Ledger, Liveness, Story]) -> View:
    ledger, liveness, _ = told
    built = build(ledger, liveness, settings=Settings(), catch_up=False, verify_every=0)
    built.verify.run_once()
    return built
