"""No password from a URL in any output, log, repr or command line (issue 16.7).

Real processes: the CLI's error lines and success lines, the projector's logs,
and the command lines of the demo's worker processes read from /proc while it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jobledger import Ledger, RedisLiveness, SqlLiveness
from jobledger.errors import ConfigurationError
from jobledger.testing import RedisServer, free_port
from tests.helpers import JOBLEDGER, run_cli

#: Every secret below is made of these words; none of them may ever be shown.
SECRET_WORDS = ("Sup3r", "TopSecret", "s3cret")


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for word in SECRET_WORDS:
            assert word not in text, text


#: URLs of servers that do not exist, with secrets in every place a URL can carry one; the
#: port is filled in when a test runs, so the test ids stay the same from run to run (the
#: parallel runner collects the tests once per worker, and the lists must agree).
DEAD_DATABASE_URLS = (
    "postgresql://u@127.0.0.1:{port}/x?password=Sup3rTopSecret",
    "postgresql://u@127.0.0.1:{port}/x?sslpassword=s3cret&password=Sup3r",
    "postgresql://u:Sup3r@TopSecret@127.0.0.1:{port}/x",
    "postgresql://u:Sup3r/TopSecret@127.0.0.1:{port}/x",
)
DEAD_REDIS_URLS = (
    "redis://:Sup3r@TopSecret@127.0.0.1:{port}/15",
    "redis://127.0.0.1:{port}/15?password=Sup3rTopSecret",
    "redis://127.0.0.1:{port}/15?password=Sup3r@TopSecret",
)


def dead(template: str) -> str:
    """``template`` at a port nothing listens on."""
    return template.format(port=free_port())


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "ledger.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite:///{path}"


@pytest.mark.parametrize("template", DEAD_DATABASE_URLS)
def test_database_error_lines_hide_the_password(template: str) -> None:
    done = run_cli("--database-url", dead(template), "jobs", timeout=30)
    assert done.returncode != 0
    assert done.stderr.startswith("error: "), done.stderr
    assert_no_secret(done.stdout, done.stderr)


@pytest.mark.parametrize("template", DEAD_REDIS_URLS)
def test_redis_error_lines_hide_the_password(template: str, sqlite_url: str) -> None:
    url = dead(template)
    done = run_cli("--database-url", sqlite_url, "--redis-url", url, "processes", timeout=30)
    assert done.returncode != 0
    assert "error: Redis at redis://" in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_db_upgrade_line_hides_a_query_password(postgres_url: str) -> None:
    # The test server trusts every local connection, so any password is accepted.
    done = run_cli("--database-url", postgres_url + "?password=Sup3rTopSecret", "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert "?password=*** is at revision" in done.stdout
    assert_no_secret(done.stdout, done.stderr)


def test_a_long_running_command_warns_of_a_password_on_its_command_line(
    postgres_url: str,
) -> None:
    with_password = postgres_url + "?password=Sup3rTopSecret"
    rq_url = "redis://:Sup3r@127.0.0.1:1/0"
    on_argv = run_cli("--database-url", with_password, "recover", "--once", "--rq-url", rq_url)
    assert on_argv.returncode == 0, on_argv.stderr
    warnings = [line for line in on_argv.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {option} holds a password, which every user of this machine can read in "
        f"the process list while this runs; set {env} instead"
        for option, env in (
            ("--database-url", "JOBLEDGER_DATABASE_URL"),
            ("--rq-url", "JOBLEDGER_RQ_URL"),
        )
    ]
    env = {"JOBLEDGER_DATABASE_URL": with_password, "JOBLEDGER_RQ_URL": rq_url}
    from_env = run_cli("recover", "--once", env=env)
    assert from_env.returncode == 0, from_env.stderr
    assert "warning:" not in from_env.stderr
    assert_no_secret(on_argv.stdout, on_argv.stderr, from_env.stdout, from_env.stderr)


def test_reprs_hide_passwords(sqlite_url: str) -> None:
    for url in map(dead, DEAD_DATABASE_URLS):
        try:
            ledger = Ledger(url)  # no connection is made until the first command
        except ConfigurationError as exc:  # the unencoded "@": refused, and said so
            assert "%40" in str(exc)
            assert_no_secret(str(exc))
            continue
        assert_no_secret(repr(ledger), repr(SqlLiveness(ledger)))
        ledger.close()
    for url in map(dead, DEAD_REDIS_URLS):
        liveness = RedisLiveness(url)
        assert_no_secret(repr(liveness))
        liveness.close()


@pytest.mark.parametrize("template", DEAD_REDIS_URLS)
def test_projector_logs_hide_the_password(template: str, sqlite_url: str) -> None:
    url = dead(template)
    process = subprocess.Popen(
        [JOBLEDGER, "--database-url", sqlite_url, "--redis-url", url, "recover"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    watchdog = threading.Timer(30, process.kill)  # should it never log the failure
    watchdog.start()
    lines = []
    for line in process.stderr:  # until it has logged a failed sweep against the dead Redis
        lines.append(line)
        if "Redis at redis://" in line:
            break
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    watchdog.cancel()
    assert "Redis at redis://" in "".join(lines), lines
    assert_no_secret(stdout, *lines, stderr)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it exited meanwhile
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_demo_workers_get_no_password_on_their_command_line(tmp_path: Path) -> None:
    password = "Sup3r@TopSecret"
    with RedisServer(password=password) as server:
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        # The URL in the environment, as one should pass a secret: then only what the demo
        # itself puts on its children's command lines can show there.
        demo = subprocess.Popen(
            [JOBLEDGER, "demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "JOBLEDGER_DATABASE_URL": "", "JOBLEDGER_REDIS_URL": url},
        )
        seen: list[str] = []
        workers: set[int] = set()
        deadline = time.monotonic() + 30
        while demo.poll() is None and time.monotonic() < deadline and len(workers) < 3:
            for child in _children(demo.pid):
                try:
                    line = (Path("/proc") / str(child) / "cmdline").read_text()
                except OSError:
                    continue
                seen.append(line)
                if "jobledger.demo" in line:
                    workers.add(child)
            time.sleep(0.05)
        stdout, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 0, stdout + stderr
    assert len(workers) == 3, seen
    assert_no_secret(stdout, stderr, *seen)
