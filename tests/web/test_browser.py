"""What a person sees: Debian's Chromium, driven by Playwright, against `jobledger web`.

The server is the real command (uvicorn in a subprocess) over a real ledger, on
PostgreSQL and on SQLite, behind basic auth. One browser for the module; every
page is photographed into ``test-artifacts/web/`` (gitignored).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobledger import Ledger
from jobledger.liveness import SqlLiveness
from jobledger.testing import free_port, scratch_database

from .story import COUNTS, MARKUP_ID, SCRIPT_ID, ZOMBIE_STORY, count_all, tell

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
SECRET = "browser-secret-41c7"
#: Long enough that the registered live process stays alive for the whole module.
TTL = 600.0


@dataclass
class Served:
    kind: str
    base: str
    ledger: Ledger
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    if request.param == "postgresql":
        server_url = request.getfixturevalue("postgres_server_url")
        with scratch_database(server_url, prefix="jobledger_web") as url:
            yield from _serve("postgresql", url.render_as_string(hide_password=False))
    else:
        path = tmp_path_factory.mktemp("web") / "ledger.db"
        yield from _serve("sqlite", f"sqlite:///{path}")


def _serve(kind: str, url: str) -> Iterator[Served]:
    ledger = Ledger(url)
    ledger.migrate()
    liveness = SqlLiveness(ledger, ttl=TTL)
    tell(ledger, liveness)
    port = free_port()
    command = [
        sys.executable, "-m", "jobledger.cli", "--database-url", url,
        "web", "--port", str(port), "--ttl", str(TTL), "--refresh", "1",
    ]  # fmt: skip
    env = {**os.environ, "JOBLEDGER_WEB_TOKEN": SECRET}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, server)
        yield Served(kind, base, ledger)
    finally:
        server.terminate()
        server.wait(timeout=15)
        liveness.close()
        ledger.close()


def _wait_until_up(base: str, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    probe = urllib.request.Request(
        base + "/api/verify", headers={"Authorization": f"Bearer {SECRET}"}
    )
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read().decode() if server.stdout else ""
            raise AssertionError(f"jobledger web exited: {output}")
        try:
            with urllib.request.urlopen(probe, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("jobledger web did not answer in time")


@pytest.fixture
def page(browser: object, served: Served) -> Iterator[object]:
    context = browser.new_context(  # type: ignore[attr-defined]
        http_credentials={"username": "jobledger", "password": SECRET},
        viewport={"width": 1280, "height": 900},
    )
    opened = context.new_page()
    opened.on("dialog", lambda dialog: (served.dialogs.append(dialog.message), dialog.dismiss()))
    opened.on(
        "console",
        lambda message: (
            served.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    yield opened
    context.close()
    assert served.dialogs == []  # no hostile text ever ran as script
    assert served.console_errors == []  # nor broke the page (e.g. a CSP refusal)


def shot(page: object, served: Served, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{served.kind}-{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_overview(page: object, served: Served) -> None:
    p: object = page
    p.goto(served.base + "/")  # type: ignore[attr-defined]
    counts = {
        state: p.locator(f'#state-counts li[data-state="{state}"] .count').inner_text()  # type: ignore[attr-defined]
        for state in COUNTS
    }
    assert counts == {state: str(count) for state, count in COUNTS.items()}
    queues = p.locator("#queues td.queue").all_inner_texts()  # type: ignore[attr-defined]
    assert queues == ["<i>mail</i>", "default"]
    assert p.locator("#processes tbody tr").count() == 1  # type: ignore[attr-defined]
    assert p.locator("#processes td.held").inner_text() == "1"  # type: ignore[attr-defined]
    alert = p.locator("#dead-holders").inner_text()  # type: ignore[attr-defined]
    assert "2 claimed jobs are held by 1 process that is not alive" in alert
    shot(p, served, "overview")


def test_attention_flags_the_dead_holders_jobs(page: object, served: Served) -> None:
    p: object = page
    p.goto(served.base + "/attention")  # type: ignore[attr-defined]
    rows = p.locator("#held-by-dead tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == 2
    for index in range(2):
        assert "dead holder" in rows.nth(index).locator(".flag").inner_text()
    links = p.locator("#held-by-dead tbody tr td:first-child a").all_inner_texts()  # type: ignore[attr-defined]
    assert sorted(links) == sorted(["orphan-1", SCRIPT_ID])
    assert p.locator("#exhausted a").all_inner_texts() == ["poison-1"]  # type: ignore[attr-defined]
    assert p.locator("#rejected a").all_inner_texts() == ["zombie-1"]  # type: ignore[attr-defined]
    shot(p, served, "attention")
    # The hostile id's link leads to its page, where it is plain text.
    p.locator("#held-by-dead a", has_text="alert").click()  # type: ignore[attr-defined]
    assert p.locator("#job-id").inner_text() == SCRIPT_ID  # type: ignore[attr-defined]
    assert "dead holder" in p.locator("dl.facts").inner_text()  # type: ignore[attr-defined]
    shot(p, served, "hostile-job")


def test_job_timeline_in_order(page: object, served: Served) -> None:
    p: object = page
    p.goto(served.base + "/jobs/zombie-1")  # type: ignore[attr-defined]
    assert p.locator("#timeline td.event").all_inner_texts() == ZOMBIE_STORY  # type: ignore[attr-defined]
    assert p.locator("#timeline-drawing circle").count() == len(ZOMBIE_STORY)  # type: ignore[attr-defined]
    assert p.locator("#chain").inner_text().startswith("intact")  # type: ignore[attr-defined]
    assert p.locator("#payload").inner_text() == '{"order":7}'  # type: ignore[attr-defined]
    shot(p, served, "job")


def test_markup_and_script_in_payloads_are_text(page: object, served: Served) -> None:
    p: object = page
    p.goto(served.base + "/search")  # type: ignore[attr-defined]
    p.fill("input[name=q]", MARKUP_ID)  # type: ignore[attr-defined]
    p.press("input[name=q]", "Enter")  # type: ignore[attr-defined]
    p.wait_for_selector("#job-id")  # type: ignore[attr-defined]
    assert p.locator("#job-id").inner_text() == MARKUP_ID  # type: ignore[attr-defined]
    payload = p.locator("#payload").inner_text()  # type: ignore[attr-defined]
    assert "</script><script>alert(3)</script>" in payload
    assert "[red]x[/red]" in payload


def test_search_and_verify(page: object, served: Served) -> None:
    p: object = page
    p.goto(served.base + "/")  # type: ignore[attr-defined]
    p.fill("input[name=q]", "orph")  # type: ignore[attr-defined]
    p.press("input[name=q]", "Enter")  # type: ignore[attr-defined]
    # Enter starts a navigation: read the results once the search page shows them.
    p.wait_for_selector("#search-results a")  # type: ignore[attr-defined]
    assert p.locator("#search-results a").all_inner_texts() == ["orphan-1"]  # type: ignore[attr-defined]
    p.goto(served.base + "/verify")  # type: ignore[attr-defined]
    p.wait_for_selector("#verify-result", timeout=20_000)  # type: ignore[attr-defined]
    assert p.locator("#verify-result").inner_text() == "OK"  # type: ignore[attr-defined]


def test_overview_refreshes_itself(page: object, served: Served) -> None:
    p: object = page
    p.goto(served.base + "/")  # type: ignore[attr-defined]
    count = p.locator('#state-counts li[data-state="enqueued"] .count')  # type: ignore[attr-defined]
    before = int(count.inner_text())
    served.ledger.enqueue(f"late-{served.kind}", queue="default")
    count_all(served.ledger)  # the server's own catch-up would too, within its poll interval
    expected = str(before + 1)
    p.wait_for_function(  # type: ignore[attr-defined]
        "expected => document.querySelector("
        "'#state-counts li[data-state=\"enqueued\"] .count').textContent === expected",
        arg=expected,
        timeout=15_000,
    )
