"""The optional secret: bearer token or basic auth, never on argv, never shown."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from jobledger import Ledger
from jobledger.errors import ConfigurationError
from jobledger.liveness import MemoryLiveness
from jobledger.web.auth import load_secret
from jobledger.web.serve import build, check_binding

SECRET = "tok-7f3a9c1e5b"


@pytest.fixture
def guarded(sqlite_ledger: Ledger) -> TestClient:
    sqlite_ledger.enqueue("job-1")
    view = build(sqlite_ledger, MemoryLiveness(), secret=SECRET, catch_up=False, verify_every=0)
    return TestClient(view.app)


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.mark.parametrize("path", ["/", "/api/jobs", "/jobs/job-1", "/static/style.css", "/nope"])
def test_every_path_needs_the_secret(guarded: TestClient, path: str) -> None:
    refused = guarded.get(path)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic realm=")
    for headers in (
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {SECRET}x"},
        basic("jobledger", "wrong"),
        basic("someone", SECRET),
        {"Authorization": "Basic !!!"},
        {"Authorization": SECRET},
    ):
        assert guarded.get(path, headers=headers).status_code == 401, headers


def test_the_secret_lets_in(guarded: TestClient) -> None:
    for headers in ({"Authorization": f"Bearer {SECRET}"}, basic("jobledger", SECRET)):
        for path in ["/", "/api/jobs", "/jobs/job-1", "/attention"]:
            answer = guarded.get(path, headers=headers)
            assert answer.status_code == 200
            assert SECRET not in answer.text


def test_secret_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBLEDGER_WEB_TOKEN", raising=False)
    assert load_secret(None) is None
    monkeypatch.setenv("JOBLEDGER_WEB_TOKEN", f" {SECRET}\n")
    assert load_secret(None) == SECRET
    token_file = tmp_path / "token"
    token_file.write_text("from-file\nignored\n")
    assert load_secret(token_file) == "from-file"
    token_file.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        load_secret(token_file)
    token_file.write_bytes(b"\xffzq9-bytes")
    with pytest.raises(ConfigurationError, match="not UTF-8") as raised:
        load_secret(token_file)
    assert "zq9" not in str(raised.value)
    assert "xff" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_secret(tmp_path / "missing")


def test_only_loopback_is_served_without_a_secret() -> None:
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        check_binding(host, None, allow_open=False)
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.org"):
        with pytest.raises(ConfigurationError, match="without authentication"):
            check_binding(host, None, allow_open=False)
        check_binding(host, SECRET, allow_open=False)
        check_binding(host, None, allow_open=True)


def _jobledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_refuses_an_open_public_address(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    env = {"JOBLEDGER_WEB_TOKEN": ""}
    result = _jobledger("--database-url", url, "web", "--host", "0.0.0.0", env=env)
    assert result.returncode == 1
    assert "refusing to serve 0.0.0.0 without authentication" in result.stderr
    missing = _jobledger("--database-url", url, "web", "--token-file", str(tmp_path / "none"))
    assert missing.returncode == 1
    assert "cannot read the token file" in missing.stderr
    helped = _jobledger("web", "--help")
    assert helped.returncode == 0
    assert "--token-file" in helped.stdout
    assert "--token " not in helped.stdout  # the secret has no argv option
