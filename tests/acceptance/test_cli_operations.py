"""The CLI in a subprocess: enqueue, jobs, processes, recover, demo, and its error lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jobledger import Ledger, SqlLiveness, Worker
from jobledger.identity import new_identity
from jobledger.testing import free_port
from tests.helpers import info, run_cli


def test_enqueue_and_list(url: str) -> None:
    done = run_cli(
        "--database-url", url, "enqueue", "a", "b", "--queue", "mail", "--data", '{"to": 1}'
    )
    assert done.returncode == 0, done.stderr
    assert "enqueued 2 jobs" in done.stdout
    listed = run_cli("--database-url", url, "jobs", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["job_id"], r["queue"], r["state"]) for r in rows] == [
        ("a", "mail", "enqueued"),
        ("b", "mail", "enqueued"),
    ]
    table = run_cli("--database-url", url, "jobs", "--state", "enqueued")
    assert "2 jobs" in table.stdout


def test_environment_variable_names_the_database(url: str) -> None:
    assert run_cli("enqueue", "x", env={"JOBLEDGER_DATABASE_URL": url}).returncode == 0
    with Ledger(url) as ledger:
        assert ledger.status("x").state == "enqueued"


def test_processes_lists_live_workers_and_their_jobs(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.enqueue_many(["held-1", "held-2"])
        with Worker(ledger, SqlLiveness(ledger, ttl=30)) as worker:
            worker.claim("held-1")
            worker.claim("held-2")
            listed = run_cli("--database-url", url, "processes", "--json")
            (process,) = [json.loads(line) for line in listed.stdout.splitlines()]
            assert process["identity"] == worker.identity
            assert process["held"] == ["held-1", "held-2"]
            assert worker.identity in run_cli("--database-url", url, "processes").stdout


def test_processes_counts_the_claims_of_dead_holders_without_listing_them(url: str) -> None:
    dead_one, dead_two = new_identity(host="gone"), new_identity(host="gone")
    with Ledger(url) as ledger:
        ledger.enqueue_many(["mine", "lost-1", "lost-2", "lost-3", "waiting"])
        ledger.claim("lost-1", dead_one)
        ledger.claim("lost-2", dead_one)
        ledger.claim("lost-3", dead_two)
        assert ledger.claims_per_holder() == {dead_one: 2, dead_two: 1}
        with Worker(ledger, SqlLiveness(ledger, ttl=30)) as worker:
            worker.claim("mine")
            assert ledger.claims_per_holder() == {dead_one: 2, dead_two: 1, worker.identity: 1}
            listed = run_cli("--database-url", url, "processes", "--json")
            (process,) = [json.loads(line) for line in listed.stdout.splitlines()]
            assert (process["identity"], process["held"]) == (worker.identity, ["mine"])
            table = run_cli("--database-url", url, "processes").stdout
    assert "3 claimed jobs are held by 2 processes that are not alive" in table
    assert "lost-" not in table


def test_processes_lists_the_first_live_ones_and_says_how_many_there_are(url: str) -> None:
    identities = sorted(new_identity(host="many") for _ in range(3))
    with Ledger(url) as ledger:
        ledger.enqueue_many([f"job-{n}" for n in range(3)])
        liveness = SqlLiveness(ledger, ttl=30)
        for n, identity in enumerate(identities):
            liveness.register(info(identity))
            ledger.claim(f"job-{n}", identity)
        first = run_cli("--database-url", url, "processes", "--limit", "2", "--json")
        every = run_cli("--database-url", url, "processes", "--limit", "0", "--json")
        table = run_cli("--database-url", url, "processes", "--limit", "2").stdout
        refused = run_cli("--database-url", url, "processes", "--limit", "-1")
    listed = [json.loads(line) for line in first.stdout.splitlines()]
    assert [(p["identity"], p["held"]) for p in listed] == [
        (identities[0], ["job-0"]),
        (identities[1], ["job-1"]),
    ]
    assert "The first 2 of 3 live processes" in first.stderr
    assert [json.loads(line)["identity"] for line in every.stdout.splitlines()] == identities
    assert every.stderr == ""
    assert "The first 2 of 3 live processes" in table
    assert identities[2] not in table
    assert "not alive" not in table  # the third is alive, only not listed
    assert refused.returncode == 2
    assert "--limit" in refused.stderr


def test_recover_once_abandons_the_dead_and_reports(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.enqueue("orphan")
        ledger.claim("orphan", new_identity(host="gone"))
    done = run_cli(
        "--database-url", url, "recover", "--once", "--ttl", "1", "--grace", "0", "--json"
    )
    assert done.returncode == 0, done.stderr
    (decision,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (decision["job_id"], decision["requeued"]) == ("orphan", True)
    assert "abandoned" in done.stderr  # every decision is logged


def test_recover_ends_dead_claims_several_at_once(url: str) -> None:
    ids = [f"orphan-{i}" for i in range(12)]
    with Ledger(url) as ledger:
        ledger.enqueue_many(ids)
        for job_id in ids:
            ledger.claim(job_id, new_identity(host="gone"))
    args = ("--database-url", url, "recover", "--once", "--ttl", "1", "--grace", "0", "--json")
    done = run_cli(*args, "--abandon-concurrency", "4")
    assert done.returncode == 0, done.stderr
    decisions = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(d["job_id"] for d in decisions) == sorted(ids)
    refused = run_cli(*args, "--abandon-concurrency", "0")
    assert refused.returncode == 2
    assert "--abandon-concurrency" in refused.stderr


def test_operators_requeue_and_cancel(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.enqueue_many(["failed", "waiting", "more"])
        ledger.fail(ledger.claim("failed", new_identity()), "boom")
    done = run_cli("--database-url", url, "requeue", "failed", "--reason", "fixed the SMTP host")
    assert done.returncode == 0, done.stderr
    assert "requeued 1 job" in done.stdout
    assert run_cli("--database-url", url, "cancel", "waiting", "more").returncode == 0
    refused = run_cli("--database-url", url, "cancel", "failed", "waiting")
    assert refused.returncode == 1
    assert "cancelled 1 of 2 jobs before:" in refused.stderr
    assert "'waiting'" in refused.stderr
    assert "Traceback" not in refused.stderr
    with Ledger(url) as ledger:
        assert [ledger.status(j).state for j in ("failed", "waiting", "more")] == [
            "cancelled",
            "cancelled",
            "cancelled",
        ]
        last = ledger.history("failed")[-2]
        assert (last.type, last.data) == ("requeued", {"reason": "fixed the SMTP host"})
        assert last.process is not None
        assert last.process.split(":")[1] != str(os.getpid())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "nope"], "does not exist"),
        (["enqueue", "dup", "dup"], "already exists"),
        (["jobs", "--state", "running"], "'running' is not one of 'enqueued'"),
        (["enqueue", "j", "--data", "{not json"], "not JSON"),
    ],
)
def test_expected_errors_are_one_clear_line(url: str, args: list[str], message: str) -> None:
    done = run_cli("--database-url", url, *args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_database_masks_the_password() -> None:
    done = run_cli("--database-url", f"postgresql://me:hunter2@127.0.0.1:{free_port()}/x", "jobs")
    assert done.returncode == 1
    assert "hunter2" not in done.stderr
    assert "unavailable" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    debug = run_cli(
        "--database-url", f"postgresql://me:hunter2@127.0.0.1:{free_port()}/x", "--debug", "jobs"
    )
    assert "Traceback" in debug.stderr


def test_unreachable_redis_is_a_clear_error(url: str) -> None:
    done = run_cli(
        "--database-url", url, "--redis-url", f"redis://:pw@127.0.0.1:{free_port()}/0", "processes"
    )
    assert done.returncode == 1
    assert "Redis" in done.stderr
    assert ":pw@" not in done.stderr


@pytest.mark.slow
def test_demo_passes_in_under_thirty_seconds(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"  # the demo's temporary folder goes here, and must go away
    temp.mkdir()
    started = time.monotonic()
    done = run_cli("demo", timeout=60, env={"JOBLEDGER_DATABASE_URL": "", "TMPDIR": str(temp)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    assert os.listdir(temp) == []
    for expected in (
        "SIGKILL",
        "abandoned",
        "requeued",
        "timeline of",
        "verify: ok",
        "demo passed",
    ):
        assert expected in done.stdout


def test_db_current_says_whether_the_schema_is_behind(tmp_path: Path, url: str) -> None:
    fresh = run_cli("--database-url", f"sqlite:///{tmp_path / 'new.db'}", "db", "current", "--json")
    assert fresh.returncode == 1
    assert json.loads(fresh.stdout)["current"] is None
    done = run_cli("--database-url", url, "db", "current", "--json")
    assert done.returncode == 0
    state = json.loads(done.stdout)
    assert state["up_to_date"] is True
    assert state["current"] == state["head"]
