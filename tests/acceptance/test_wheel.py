"""A built wheel, installed into a fresh venv, carries its migrations and can migrate.

Both the wheel and the sdist carry ``py.typed`` (PEP 561), so type checkers read
the installed package's annotations.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from jobledger import migrate

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.slow
def test_wheel_installs_and_migrates_a_new_sqlite_file(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        dist,
        ROOT,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("jobledger-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "jobledger/migrations/env.py" in names
    assert "jobledger/py.typed" in names
    assert any(n.startswith("jobledger/migrations/versions/0001") for n in names)

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    _run(env / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)

    work = tmp_path / "elsewhere"  # not the checkout, so only the installed package is importable
    work.mkdir()
    code = (
        "import jobledger, sys; from jobledger import Ledger; "
        "assert 'site-packages' in jobledger.__file__, jobledger.__file__; "
        "Ledger('sqlite:///api.db').migrate()"
    )
    _run(env / "bin" / "python", "-c", code, cwd=work)
    assert {"jobledger_events", "jobledger_jobs"} <= _tables(work / "api.db")

    out = _run(
        env / "bin" / "jobledger", "--database-url", "sqlite:///cli.db", "db", "upgrade", cwd=work
    )
    assert f"revision {migrate.head()}" in out
    assert {"jobledger_checkpoints", "jobledger_processes"} <= _tables(work / "cli.db")


@pytest.mark.slow
def test_sdist_carries_the_type_marker_and_migrations(tmp_path: Path) -> None:
    _run(sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", tmp_path, cwd=ROOT)
    (sdist,) = tmp_path.glob("jobledger-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"jobledger/py.typed", "migrations/env.py", "pyproject.toml"} <= names
