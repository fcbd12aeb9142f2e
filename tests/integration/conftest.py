"""Fixtures of the tests that count what a command sends (test_holder_writes, test_handoff)."""

from __future__ import annotations

from typing import Any

import pytest

from jobledger.store import Store
from tests.conftest import truncate_all


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """The scratch PostgreSQL database, emptied."""
    truncate_all(postgres_url)
    return postgres_url


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL the stores of this test send for commands, in order."""
    sent: list[str] = []
    execute = Store._execute

    def counted(self: Store, conn: Any, sql: str, parameters: Any) -> Any:
        sent.append(sql)
        return execute(self, conn, sql, parameters)

    monkeypatch.setattr(Store, "_execute", counted)
    return sent
