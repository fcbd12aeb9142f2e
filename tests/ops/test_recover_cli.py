"""Bad ``--metrics-*`` input: one clear line, a non-zero exit, nothing started or written."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.helpers import JOBLEDGER


def _recover(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    return subprocess.run(
        [JOBLEDGER, "--database-url", url, "recover", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _recover(tmp_path, "--metrics-port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot serve metrics on 127.0.0.1:{port}: [Errno 98] Address already in use"
    ]
    assert not (tmp_path / "ledger.db").exists()  # the ledger was never opened


def test_an_unknown_host_is_a_clear_error(tmp_path: Path) -> None:
    done = _recover(tmp_path, "--metrics-port", "0", "--metrics-host", "no-such-host.invalid")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: cannot serve metrics on no-such-host.invalid:0: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ledger.db").exists()


def test_a_hostile_host_is_shown_escaped(tmp_path: Path) -> None:
    done = _recover(tmp_path, "--metrics-port", "0", "--metrics-host", "evil\x1b[31mhost")
    assert done.returncode == 1
    assert "\x1b" not in done.stderr
    assert "evil\\x1b[31mhost" in done.stderr


def test_out_of_range_ports_and_once_are_usage_errors(tmp_path: Path) -> None:
    for args in (["--metrics-port", "65536"], ["--metrics-port", "-1"], ["--metrics-port", "x"]):
        done = _recover(tmp_path, *args)
        assert done.returncode == 2, args
        assert "--metrics-port" in done.stderr
    done = _recover(tmp_path, "--once", "--metrics-port", "0")
    assert done.returncode == 2
    assert "not with --once" in done.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_the_environment_s_metrics_port_does_not_stop_a_one_off_sweep(
    sqlite_template: Path, tmp_path: Path
) -> None:
    (tmp_path / "ledger.db").write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    done = subprocess.run(
        [JOBLEDGER, "--database-url", url, "recover", "--once"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "JOBLEDGER_METRICS_PORT": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert "0 jobs recovered" in done.stderr
    assert "serving" not in done.stderr
