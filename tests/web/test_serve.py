"""`jobledger web` as a process: it serves, logs requests safely, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jobledger import Ledger
from jobledger.testing import free_port


def test_serves_logs_hostile_paths_safely_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as ledger:
        ledger.migrate()
        ledger.enqueue("job-1")
    port = free_port()
    env = {**os.environ, "JOBLEDGER_WEB_TOKEN": ""}
    server = subprocess.Popen(
        [sys.executable, "-m", "jobledger.cli", "--database-url", url, "web", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                with urllib.request.urlopen(base + "/jobs/job-1", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except urllib.error.URLError:
                time.sleep(0.05)
        try:
            urllib.request.urlopen(base + "/jobs/x%1B%5B2Jy", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=20)
    # A graceful shutdown, then status 0 (uvicorn re-raises SIGTERM; serve absorbs it).
    assert server.returncode == 0, stderr
    assert "Application shutdown complete" in stderr
    assert "GET /jobs/job-1" in stderr
    assert "\x1b" not in stderr
    assert "GET /jobs/x%1B%5B2Jy" in stderr  # the path as sent, never its decoded escape
