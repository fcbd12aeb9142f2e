"""Bad option values are refused at start, by name; each error blames its real culprit."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from jobledger import Ledger, RecoveryPolicy
from jobledger.identity import new_identity
from jobledger.testing import free_port
from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--grace", "nan"], "--grace"),
        (["--grace", "-1"], "--grace"),
        (["--grace", "inf"], "--grace"),
        (["--ttl", "inf"], "--ttl"),
        (["--ttl", "0"], "--ttl"),
        (["--interval", "0"], "--interval"),
        (["--interval", "nan"], "--interval"),
        (["--heartbeat-timeout", "nan"], "--heartbeat-timeout"),
        (["--heartbeat-timeout", "-1"], "--heartbeat-timeout"),
        (["--max-attempts", "0"], "--max-attempts"),
        (["--queue-max-attempts", "mail=0"], "--queue-max-attempts"),
        (["--queue-max-attempts", "mail=x"], "--queue-max-attempts"),
        (["--queue-heartbeat-timeout", "mail=nan"], "--queue-heartbeat-timeout"),
        (["--queue-heartbeat-timeout", "mail=-5"], "--queue-heartbeat-timeout"),
    ],
)
def test_recover_refuses_bad_values_at_start(url: str, args: list[str], option: str) -> None:
    # --once: a value accepted by mistake would make a clean sweep and exit 0.
    done = run_cli("--database-url", url, "recover", "--once", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Invalid value for '{option}'" in done.stderr
    assert "Traceback" not in done.stderr


def test_recover_refuses_a_bad_ttl_from_the_environment(url: str) -> None:
    done = run_cli("--database-url", url, "recover", "--once", env={"JOBLEDGER_TTL": "nan"})
    assert done.returncode == 2
    assert "Invalid value for '--ttl'" in done.stderr


def test_recover_takes_good_per_queue_values(url: str) -> None:
    done = run_cli(
        "--database-url", url, "recover", "--once", "--grace", "0",
        "--queue-max-attempts", "mail=2", "--queue-heartbeat-timeout", "mail=0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "0 jobs recovered" in done.stderr


def test_a_negative_limit_is_blamed_on_the_limit(url: str) -> None:
    done = run_cli("--database-url", url, "jobs", "--limit", "-1")
    assert done.returncode == 2
    assert "Invalid value for '--limit'" in done.stderr
    assert "--state" not in done.stderr


def test_an_undecodable_queue_is_not_blamed_on_the_state(url: str) -> None:
    done = run_cli("--database-url", url, "jobs", "--queue", "q\udcff")  # the byte 0xff in argv
    assert done.returncode != 0
    assert "--state" not in done.stderr


def test_an_unknown_database_option_is_blamed_on_the_url(postgres_url: str) -> None:
    bad = make_url(postgres_url).update_query_dict({"foo": "bar"})
    done = run_cli("--database-url", bad.render_as_string(hide_password=False), "jobs")
    assert done.returncode == 1
    assert "error: cannot use database URL" in done.stderr
    assert 'invalid connection option "foo"' in done.stderr
    assert "--state" not in done.stderr


def test_redeliver_rq_needs_a_redis_url(url: str) -> None:
    done = run_cli("--database-url", url, "recover", "--once", "--redeliver", "rq")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--redeliver rq needs --rq-url or --redis-url" in done.stderr
    assert "Traceback" not in done.stderr


def test_redeliver_rq_refuses_a_cluster_redis_url(url: str) -> None:
    cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    done = run_cli(
        "--database-url", url, "recover", "--once", "--redeliver", "rq",
        env={"JOBLEDGER_REDIS_URL": cluster},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "RQ cannot use a Redis Cluster or Sentinel URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_redeliver_to_an_rq_that_is_down_fails_without_showing_its_password(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.enqueue("orphan")
        claim = ledger.claim("orphan", new_identity())
        ledger.abandon("orphan", claim.token, "holder died", policy=RecoveryPolicy())
    rq_url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    done = run_cli(
        "--database-url", url, "recover", "--once", "--redeliver", "rq",
        env={"JOBLEDGER_RQ_URL": rq_url},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: job 'orphan': redelivery to rq failed: ConnectionError" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("sidekiq", "sidekiq (expected rq, celery:MODULE:ATTR or taskiq:MODULE:ATTR)"),
        ("taskiq:json", "taskiq:json (expected taskiq:MODULE:ATTR)"),
        ("taskiq:json:dumps", "json:dumps is not a taskiq broker"),
        ("celery:json", "celery:json (expected celery:MODULE:ATTR)"),
        ("celery:no_such_module_here:app", "cannot import no_such_module_here:app"),
        ("celery:json:dumps", "json:dumps is not a Celery app"),
        ("celery:json:\x1b[31mred", "json:\\x1b[31mred is not a Celery app"),
    ],
)
def test_redeliver_target_that_is_not_one_is_refused_by_name(
    url: str, target: str, said: str
) -> None:
    done = run_cli("--database-url", url, "recover", "--once", "--redeliver", target)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--redeliver" in done.stderr
    assert said in done.stderr
    assert "\x1b" not in done.stderr
    assert "Traceback" not in done.stderr
