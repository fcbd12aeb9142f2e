"""Fixtures of the CLI's acceptance tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def url(tmp_path: Path, sqlite_template: Path) -> str:
    """The URL of a fresh, migrated SQLite ledger for the command under test."""
    shutil.copy(sqlite_template, tmp_path / "cli.db")
    return f"sqlite:///{tmp_path / 'cli.db'}"
