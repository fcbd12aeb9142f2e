"""The web view over HTTP (Starlette's TestClient): every page and API route on a real ledger."""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from sqlalchemy import make_url, text
from starlette.testclient import TestClient

from jobledger import Ledger, RedisLiveness
from jobledger.cli import cli
from jobledger.identity import new_identity
from jobledger.liveness import MemoryLiveness, ProcessInfo
from jobledger.web.reads import ROWS, Settings
from jobledger.web.serve import View, build

from ..conftest import truncate_all
from .story import (
    COUNTS,
    MARKUP_ID,
    SCRIPT_ID,
    ZOMBIE_STORY,
    tell,
)

PAGES = ["/", "/attention", "/verify", "/jobs/zombie-1", "/jobs/" + quote(SCRIPT_ID, safe="")]
APIS = [
    "/api/overview",
    "/api/queues",
    "/api/status",
    "/api/processes",
    "/api/attention",
    "/api/verify",
    "/api/jobs",
    "/api/jobs/zombie-1",
    "/api/history/zombie-1",
]
RAW_HOSTILE = ["<script>alert", "<img src=x", "</script><script>", "<i>mail"]


@pytest.fixture
def client(view: View) -> TestClient:
    return TestClient(view.app)


def cells(html: str, table_id: str, attribute: str) -> list[str]:
    """The values of ``attribute`` on the rows of the table ``table_id``."""
    table = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return re.findall(rf'{attribute}="([^"]*)"', table)


def test_overview_counts_jobs_per_state_and_queue(client: TestClient, told: tuple) -> None:
    _, _, story = told
    page = client.get("/")
    assert page.status_code == 200
    for state, count in COUNTS.items():
        assert re.search(rf'data-state="{state}"><span class="count">{count}</span>', page.text), (
            state
        )
    assert cells(page.text, "queues", "data-queue") == ["&lt;i&gt;mail&lt;/i&gt;", "default"]
    # The live process holds running-1; the dead one's two claims are pointed out.
    row = page.text.split(f'data-identity="{story.live}"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num held">1</td>' in row
    assert "3 claimed jobs" not in page.text
    assert "2 claimed jobs are held by 1 process that is not alive" in page.text


def test_attention_lists_what_needs_a_person(client: TestClient, told: tuple) -> None:
    _, _, story = told
    page = client.get("/attention").text
    dead_rows = cells(page, "held-by-dead", "data-job")
    assert sorted(dead_rows) == sorted(["orphan-1", "&lt;script&gt;alert(1)&lt;/script&gt;"])
    assert page.count('<span class="flag">dead holder</span>') == 2
    assert story.dead in page
    assert cells(page, "exhausted", "data-job") == ["poison-1"]
    assert cells(page, "abandoned", "data-job") == ["abandoned-1"]
    assert cells(page, "rejected", "data-job") == ["zombie-1"]
    assert 'id="held-by-silent"' not in page  # running-1 heartbeated just now


def test_silent_holders_are_listed_after_the_threshold(told: tuple) -> None:
    ledger, liveness, _ = told
    built = build(ledger, liveness, settings=Settings(silent_after=0.0), catch_up=False)
    page = TestClient(built.app).get("/attention").text
    assert cells(page, "held-by-silent", "data-job") == ["running-1"]


def test_job_page_tells_the_history_in_order(client: TestClient) -> None:
    page = client.get("/jobs/zombie-1").text
    rows = re.findall(r'<td class="event">([a-z]+)</td>', page)
    assert rows == ZOMBIE_STORY
    drawn = re.findall(r'<text x="\d+" y="60" class="label">([a-z]+)</text>', page)
    assert drawn == ZOMBIE_STORY
    assert '<span class="ok">intact</span>' in page
    assert '<pre id="payload">{&#34;order&#34;:7}</pre>' in page  # escaped


def test_job_page_shows_a_broken_chain(client: TestClient, told: tuple) -> None:
    ledger, _, _ = told
    with ledger.engine.begin() as conn:  # tamper with a stored payload
        conn.execute(
            text(
                "UPDATE jobledger_events SET process = 'forged' "
                "WHERE job_id = 'done-1' AND version = 2"
            )
        )
    page = client.get("/jobs/done-1").text
    assert '<span class="flag">broken</span>' in page
    assert "version 2: stored hash does not match the event&#39;s contents" in page


def test_hostile_names_are_shown_as_text(client: TestClient) -> None:
    for path in [*PAGES, "/jobs/" + quote(MARKUP_ID, safe=""), "/jobs/failed-1"]:
        page = client.get(path).text
        for raw in RAW_HOSTILE:
            assert raw not in page, (path, raw)
    script_page = client.get("/jobs/" + quote(SCRIPT_ID, safe="")).text
    assert '<span class="job-id" id="job-id">&lt;script&gt;alert(1)&lt;/script&gt;</span>' in (
        script_page
    )
    markup_page = client.get("/jobs/" + quote(MARKUP_ID, safe="")).text
    assert '<span class="job-id" id="job-id">[/bold]</span>' in markup_page
    # The payload inside a <script type="application/json"> cannot close the tag early.
    data = markup_page.split('id="job-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["payload"]["note"] == "</script><script>alert(3)</script>"
    failed_page = client.get("/jobs/failed-1").text
    assert "&lt;img src=x onerror=alert(2)&gt;" in failed_page


def test_control_characters_are_made_visible(told: tuple, view: View) -> None:
    ledger, _, _ = told
    ledger.enqueue("plain", queue="default", data={"text": "a\x1b[2Jb\u202ec"})
    page = TestClient(view.app).get("/jobs/plain").text
    assert "\x1b" not in page
    assert "\u202e" not in page
    assert "\\u001b[2Jb\\u202ec" in page or "\\x1b[2Jb\\u202ec" in page


def test_unknown_and_invalid_jobs(client: TestClient) -> None:
    missing = client.get("/jobs/" + quote("<b>nope</b>", safe=""))
    assert missing.status_code == 404
    assert "&lt;b&gt;nope&lt;/b&gt;" in missing.text
    assert "<b>nope" not in missing.text
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/jobs/nope").json() == {"error": "no job 'nope'"}
    assert client.get("/api/history/nope").status_code == 404
    assert client.get("/jobs/a%00b").status_code == 400


def test_search(client: TestClient) -> None:
    found = client.get("/search", params={"q": "zombie-1"}, follow_redirects=False)
    assert found.status_code == 303
    assert found.headers["location"] == "/jobs/zombie-1"
    hostile = client.get("/search", params={"q": SCRIPT_ID}, follow_redirects=False)
    assert hostile.headers["location"] == "/jobs/" + quote(SCRIPT_ID, safe="")
    prefix = client.get("/search", params={"q": "orph"})
    assert prefix.status_code == 200
    assert 'href="/jobs/orphan-1"' in prefix.text
    none = client.get("/search", params={"q": "<zzz>"})
    assert none.status_code == 404
    assert "&lt;zzz&gt;" in none.text


def test_verify_page(client: TestClient, told: tuple, view: View) -> None:
    assert '<span class="ok">OK</span>' in client.get("/verify").text
    ledger, _, _ = told
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE jobledger_jobs SET attempt = 9 WHERE job_id = 'done-1'"))
    view.verify.run_once()
    page = client.get("/verify").text
    assert '<span class="flag">1 problems</span>' in page
    assert 'href="/jobs/done-1"' in page
    assert client.get("/api/verify").json()["last"]["problem_count"] == 1


def _cli_json_lines(url: str, *args: str) -> list[object]:
    result = CliRunner().invoke(cli, ["--database-url", url, *args, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_api_gives_what_the_cli_gives(client: TestClient, told: tuple) -> None:
    ledger, _, _ = told
    url = ledger.engine.url.render_as_string(hide_password=False)
    assert client.get("/api/history/zombie-1").json()["steps"] == _cli_json_lines(
        url, "history", "zombie-1"
    )
    assert client.get("/api/jobs").json() == _cli_json_lines(url, "jobs")
    assert client.get("/api/jobs", params={"state": "claimed"}).json() == _cli_json_lines(
        url, "jobs", "--state", "claimed"
    )
    assert [client.get("/api/jobs/done-1").json()] == _cli_json_lines(url, "status", "done-1")
    assert client.get("/api/queues").json() == _cli_json_lines(url, "queues")
    assert client.get("/api/status").json() == {
        **dict.fromkeys(COUNTS, 0),
        **_cli_json_lines(url, "status")[0],  # type: ignore[dict-item]
    }
    attention = client.get("/api/attention").json()
    assert [job["job_id"] for job in attention["exhausted"]] == ["poison-1"]
    assert attention["rejected"][0]["job_id"] == "zombie-1"
    processes = client.get("/api/processes").json()
    assert [p["held"] for p in processes] == [["running-1"]]
    assert client.get("/api/jobs", params={"limit": "0"}).status_code == 400
    assert client.get("/api/jobs", params={"state": "lost"}).status_code == 400


def test_no_state_changing_requests(client: TestClient) -> None:
    for path in PAGES + APIS:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert client.request(method, path).status_code == 405, (method, path)


def test_security_headers(client: TestClient) -> None:
    for path in [*PAGES, *APIS, "/static/style.css", "/jobs/nope"]:
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"


def test_every_page_and_api_answers(client: TestClient) -> None:
    for path in PAGES + APIS + ["/static/refresh.js"]:
        assert client.get(path).status_code == 200, path


def test_no_database_password_is_shown(postgres_url: str) -> None:
    # PostgreSQL trusts local connections here, so a URL with a password still connects.
    password = "pw-s3cret-9d1f"
    url = make_url(postgres_url).set(password=password)
    truncate_all(postgres_url)
    with Ledger(url) as ledger:
        liveness = MemoryLiveness(ttl=15.0)
        tell(ledger, liveness)
        built = build(ledger, liveness, catch_up=False, verify_every=0)
        client = TestClient(built.app)
        for path in PAGES + APIS:
            body = client.get(path).text
            assert password not in body, path
        assert "***" in client.get("/").text


def test_an_unreachable_database_is_a_503_without_its_password() -> None:
    password = "pw-gone-77c1"
    unreachable = f"postgresql+psycopg://u:{password}@127.0.0.1:1/nothing?connect_timeout=2"
    with Ledger(unreachable) as ledger:
        built = build(ledger, MemoryLiveness(), catch_up=False, verify_every=0)
        client = TestClient(built.app)
        for path in ["/", "/api/overview", "/jobs/x", "/api/jobs"]:
            answer = client.get(path)
            assert answer.status_code == 503, path
            assert "DatabaseUnavailable" in answer.text
            assert password not in answer.text


def test_redis_liveness_shows_live_processes_and_their_age(told: tuple, redis_url: str) -> None:
    ledger, _, story = told
    liveness = RedisLiveness(redis_url, ttl=30.0, prefix=f"jobledger-web-{secrets.token_hex(4)}")
    try:
        liveness.register(ProcessInfo(story.live, "redis-host", 7, datetime.now(timezone.utc)))
        built = build(ledger, liveness, catch_up=False, verify_every=0)
        overview = TestClient(built.app).get("/api/overview").json()
        [process] = overview["processes"]
        assert process["identity"] == story.live
        assert process["held"] == 1
        assert 0 <= process["refreshed_seconds_ago"] < 5
        assert [h["identity"] for h in overview["dead_holders"]] == [story.dead]
    finally:
        liveness.unregister(story.live)
        liveness.close()


def test_the_overview_lists_the_first_live_processes_and_counts_them_all(
    told: tuple, view: View
) -> None:
    _, liveness, _ = told
    before = [p.identity for p in liveness.processes()]
    now = datetime.now(timezone.utc)
    extra = [new_identity(host="many") for _ in range(ROWS)]
    for identity in extra:
        liveness.register(ProcessInfo(identity, "many", int(identity.split(":")[1]), now))
    everyone = sorted([*before, *extra])
    client = TestClient(view.app)
    page = client.get("/").text
    assert cells(page, "processes", "data-identity") == everyone[:ROWS]
    assert f"The first {ROWS} of {len(everyone)} live processes, by identity." in page
    listed = client.get("/api/overview").json()["processes"]
    assert [p["identity"] for p in listed] == everyone  # the API lists every one


def test_dot_ids_are_reached_through_the_query(told: tuple, view: View) -> None:
    ledger, _, _ = told
    for job_id in (".", ".."):
        ledger.enqueue(job_id, queue="default")
    client = TestClient(view.app)
    listed = client.get("/api/jobs", params={"limit": "2"}).json()
    assert [job["job_id"] for job in listed] == [".", ".."]
    for job_id in (".", ".."):
        found = client.get("/search", params={"q": job_id}, follow_redirects=False)
        assert found.headers["location"] == f"/job?id={job_id}"
        page = client.get(found.headers["location"])
        assert f'<span class="job-id" id="job-id">{job_id}</span>' in page.text
        assert f'href="/api/history?id={job_id}"' in page.text
        history = client.get("/api/history", params={"id": job_id}).json()
        assert [step["type"] for step in history["steps"]] == ["enqueued"]
    assert client.get("/job").status_code == 400
