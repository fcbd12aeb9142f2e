"""The CLI package: every command is registered, and no ``--help`` loads a heavy dependency.

``jobledger.cli`` is a package of command modules added to one group; a
command left out of the group would vanish from the CLI without any import
error, and a heavy import at the top of a command module would slow every
command's start.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from jobledger.cli import cli, main

#: The CLI's whole surface: a command added or removed should be a decision.
COMMANDS = {
    ("archive",),
    ("archives",),
    ("cancel",),
    ("db",),
    ("db", "current"),
    ("db", "upgrade"),
    ("demo",),
    ("enqueue",),
    ("export",),
    ("history",),
    ("head",),
    ("jobs",),
    ("processes",),
    ("queues",),
    ("rebuild",),
    ("recover",),
    ("requeue",),
    ("seal",),
    ("status",),
    ("verify",),
    ("verify-export",),
    ("web",),
}

HEAVY = ("alembic", "celery", "redis", "rich", "rq", "starlette", "jinja2", "uvicorn")


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        found.add((*prefix, name))
        if isinstance(command, click.Group):
            found |= _paths(command, (*prefix, name))
    return found


def test_every_command_is_in_the_group() -> None:
    assert _paths(cli) == COMMANDS


def test_no_help_loads_a_heavy_dependency() -> None:
    # One interpreter for all: the command modules are imported with the package,
    # and --help runs no command body.
    helps = [[*path, "--help"] for path in sorted(COMMANDS)]
    code = (
        "import contextlib, json, sys\n"
        "from jobledger.cli import main\n"
        f"for args in {helps!r}:\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        main(args)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_python_m_prints_what_main_prints(capsys: pytest.CaptureFixture[str]) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "jobledger.cli", "recover", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    main(["recover", "--help"])  # returns: help is not an error
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == capsys.readouterr().out
