"""Startup loads only what is used: ``import jobledger`` and CLI commands leave heavy deps alone.

Each check runs in a fresh interpreter, since this test process has imported
everything already.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jobledger
import jobledger.liveness

#: Optional or heavy dependencies that no command should load unless it uses them.
HEAVY = ("alembic", "celery", "redis", "rich", "rq", "starlette", "jinja2", "uvicorn")


def _loaded_after(code: str) -> set[str]:
    """Which of ``HEAVY`` a fresh interpreter has imported after running ``code``."""
    report = f"import json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _after_command(*args: str) -> set[str]:
    """``_loaded_after`` the CLI ran ``args`` (``main`` exits through SystemExit)."""
    return _loaded_after(
        "import contextlib\n"
        "from jobledger.cli import main\n"
        f"with contextlib.suppress(SystemExit): main({list(args)!r})"
    )


def test_import_jobledger_loads_no_heavy_dependency() -> None:
    assert _loaded_after("import jobledger, jobledger.errors, jobledger.liveness") == set()


def test_public_names_still_import_from_the_package() -> None:
    assert _loaded_after("from jobledger import *\nfrom jobledger.liveness import *") == {"redis"}
    for package in (jobledger, jobledger.liveness):
        for name in package.__all__:
            assert getattr(package, name) is not None
            assert name in dir(package)
    from jobledger.ledger import Ledger
    from jobledger.liveness.redis import RedisLiveness

    assert jobledger.Ledger is Ledger
    assert jobledger.RedisLiveness is jobledger.liveness.RedisLiveness is RedisLiveness


def test_submodules_load_on_attribute_access() -> None:
    # Before lazy exports, `import jobledger` imported audit as a side effect.
    assert _loaded_after("import jobledger\nassert callable(jobledger.audit.verify)") == set()
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        _ = jobledger.no_such_thing


def test_help_loads_no_heavy_dependency() -> None:
    assert _after_command("--help") == set()
    assert _after_command("recover", "--help") == set()


def test_recover_runs_without_alembic_or_redis(tmp_path: Path, sqlite_template: Path) -> None:
    shutil.copy(sqlite_template, tmp_path / "ledger.db")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    loaded = _after_command("--database-url", url, "recover", "--once", "--json")
    assert "alembic" not in loaded
    assert "redis" not in loaded


def test_type_checkers_see_the_lazy_names_and_refuse_misspelt_ones(tmp_path: Path) -> None:
    """The lazy exports stay typed for users (py.typed): a real name has its real type,
    a misspelt one is an error, not an ``object``."""
    user_code = tmp_path / "user_code.py"
    user_code.write_text(
        "from jobledger import Ledger, Wroker\n"
        "from jobledger.liveness import RedisLiveness\n"
        "reveal_type(Ledger)\n"
        "reveal_type(RedisLiveness)\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "", str(user_code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    said = checked.stdout
    assert 'Module "jobledger" has no attribute "Wroker"' in said, said
    assert "-> jobledger.ledger.Ledger" in said, said
    assert "jobledger.liveness.redis.RedisLiveness" in said, said
