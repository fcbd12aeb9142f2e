"""Catch-up projections: exactly once, in order, and never past a transaction still open."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, func, insert, select

from jobledger import Event, Ledger
from jobledger.catchup import CatchUp, Projection, QueueStats
from jobledger.errors import LedgerError
from jobledger.identity import new_identity
from jobledger.schema import events
from jobledger.testing import scratch_database
from tests.helpers import append_in, eventually, wait_for

ROOT = Path(__file__).resolve().parents[2]
A = new_identity()

deliveries = Table(
    "test_catchup_deliveries",
    MetaData(),
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("position", Integer, nullable=False),
    Column("job_id", String(255), nullable=False),
    Column("version", Integer, nullable=False),
)


class Recorder(Projection):
    """Writes each delivered event to a table, in the batch's transaction."""

    name = "recorder"

    def handle(self, event: Event, connection: Connection) -> None:
        connection.execute(
            insert(deliveries).values(
                position=event.position, job_id=event.job_id, version=event.version
            )
        )


class Exploding(Projection):
    """Queue statistics, with a bug that shows on one job."""

    name = "exploding"

    def handle(self, event: Event, connection: Connection) -> None:
        if event.job_id == "bomb":
            raise RuntimeError("projection bug")
        QueueStats().handle(event, connection)


def _delivered(ledger: Ledger) -> list[tuple[int, str, int]]:
    query = select(deliveries.c.position, deliveries.c.job_id, deliveries.c.version)
    with ledger.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query.order_by(deliveries.c.seq))]  # type: ignore[misc]


def _positions(ledger: Ledger) -> list[int]:
    with ledger.engine.connect() as conn:
        return sorted(conn.execute(select(events.c.position)).scalars())


def _drain(runner: CatchUp, expected: int, timeout: float = 30.0) -> int:
    """Run until ``expected`` events were delivered; how many were.

    On PostgreSQL any transaction of the whole server (other databases included)
    that is still open holds the horizon back for a while, so one pass may fall short.
    """
    delivered = runner.run_once()
    deadline = time.monotonic() + timeout
    while delivered < expected and time.monotonic() < deadline:
        time.sleep(0.02)
        delivered += runner.run_once()
    return delivered


@pytest.fixture
def recorded(ledger: Ledger) -> Iterator[Ledger]:
    deliveries.create(ledger.engine)
    yield ledger
    deliveries.drop(ledger.engine)


# --- the runner ----------------------------------------------------------------------------


def test_each_event_is_delivered_once_and_the_checkpoint_follows(recorded: Ledger) -> None:
    ledger = recorded
    runner = CatchUp(ledger, Recorder(), batch_size=3)
    assert runner.run_once() == 0
    for n in range(4):
        ledger.enqueue(f"j{n}")
    ledger.complete(ledger.claim("j0", A))
    assert _drain(runner, 6) == 6
    assert runner.run_once() == 0
    ledger.cancel("j1")
    assert _drain(runner, 1) == 1
    assert [d[0] for d in _delivered(ledger)] == _positions(ledger)
    assert runner.checkpoint().position == _positions(ledger)[-1]
    assert CatchUp(ledger, Recorder()).run_once() == 0  # a new runner resumes, too


def test_a_failing_handler_delivers_nothing_of_its_batch(ledger: Ledger) -> None:
    runner = CatchUp(ledger, Exploding(), batch_size=100)
    # One transaction: on PostgreSQL both events pass the horizon together, in one batch.
    ledger.enqueue_many(["fine", "bomb"], queue="q")
    with pytest.raises(RuntimeError, match="projection bug"):
        _drain(runner, 2)
    assert runner.checkpoint().position == 0
    assert QueueStats.read(ledger) == []  # the first event's write was rolled back too


def test_reset_delivers_everything_again(ledger: Ledger) -> None:
    runner = CatchUp(ledger, QueueStats())
    ledger.enqueue("a")
    ledger.enqueue("b")
    assert _drain(runner, 2) == 2
    runner.reset()
    assert QueueStats.read(ledger) == []
    assert _drain(runner, 2) == 2
    (stat,) = QueueStats.read(ledger)
    assert (stat.queue, stat.state, stat.jobs) == ("default", "enqueued", 2)


# --- the queue statistics projection -------------------------------------------------------


def test_queue_stats_count_states_and_time_runs(ledger: Ledger) -> None:
    runner = CatchUp(ledger, QueueStats(), batch_size=4)
    for n in range(6):
        ledger.enqueue(f"m{n}", queue="mail")
    ledger.enqueue("r0", queue="reports")
    ledger.complete(ledger.claim("m0", A))
    ledger.complete(ledger.claim("m1", A))
    ledger.fail(ledger.claim("m2", A), "smtp down")
    claim = ledger.claim("m3", A)
    ledger.heartbeat(claim)
    ledger.release(claim)
    ledger.claim("m4", A)
    ledger.cancel("m5")
    with pytest.raises(LedgerError):
        ledger.complete(claim)  # stale: recorded as rejected, changes nothing
    _drain(runner, len(_positions(ledger)))

    stats = {(s.queue, s.state): s for s in QueueStats.read(ledger)}
    counts = collections.Counter((s.queue, s.state) for s in ledger.jobs())
    assert {key: s.jobs for key, s in stats.items() if s.jobs} == dict(counts)
    assert stats[("mail", "completed")].runs == 2
    assert stats[("mail", "failed")].runs == 1
    assert stats[("mail", "enqueued")].runs == 1  # the released claim
    assert stats[("mail", "claimed")].runs == 0

    def run_time(job_id: str) -> float:
        history = ledger.history(job_id)
        claimed = next(e for e in history if e.type == "claimed")
        ended = next(e for e in history if e.type in ("completed", "failed", "released"))
        return (ended.recorded_at - claimed.recorded_at).total_seconds()

    completed = stats[("mail", "completed")]
    assert completed.run_seconds == pytest.approx(run_time("m0") + run_time("m1"))
    assert completed.max_run_seconds == pytest.approx(max(run_time("m0"), run_time("m1")))
    assert completed.mean_run_seconds == pytest.approx(completed.run_seconds / 2)


# --- PostgreSQL: late commits --------------------------------------------------------------


@pytest.fixture
def private_postgres(postgres_server_url: str) -> Iterator[Ledger]:
    with scratch_database(postgres_server_url) as url, Ledger(url, heartbeat_interval=0) as ledger:
        ledger.migrate()
        deliveries.create(ledger.engine)
        yield ledger


def test_an_event_committed_late_is_not_skipped(private_postgres: Ledger) -> None:
    ledger = private_postgres
    runner = CatchUp(ledger, Recorder())
    with ledger.engine.connect() as slow:
        slow_tx = slow.begin()
        slow.execute(select(func.pg_current_xact_id()))  # takes its transaction id now
        append_in(slow, "late")  # gets the lower position ...
        ledger.enqueue("early")  # ... but this one commits first
        assert runner.run_once() == 0  # "early" is above the open transaction: it waits
        slow_tx.commit()
    assert _drain(runner, 2) == 2
    assert [d[1] for d in _delivered(ledger)] == ["late", "early"]


def test_a_holdup_names_the_open_transaction(private_postgres: Ledger) -> None:
    ledger = private_postgres
    runner = CatchUp(ledger, Recorder())
    url = ledger.engine.url.render_as_string(hide_password=False)
    assert runner.holdup() is None
    with ledger.engine.connect() as slow:
        slow_tx = slow.begin()
        slow.execute(select(func.pg_current_xact_id()))
        slow_pid = slow.execute(select(func.pg_backend_pid())).scalar_one()
        ledger.enqueue_many(["a", "b"])  # committed, but above the open transaction
        assert runner.run_once() == 0
        # The holdup names the oldest open write transaction of the whole server (the xid
        # horizon is server-wide): a test running beside this one may briefly hold an older one.
        holdup = eventually(runner.holdup, lambda h: h is not None and h.pid == slow_pid)
        assert holdup is not None
        assert (holdup.events, holdup.pid) == (2, slow_pid)
        assert holdup.database == ledger.engine.url.database
        assert holdup.state == "idle in transaction"
        expected = f"2 committed events wait behind the open transaction of backend {slow_pid}"
        shown = eventually(lambda: _queues_command(url), lambda s: expected in s.stderr)
        assert shown.returncode == 0, shown.stderr
        assert expected in shown.stderr
        slow_tx.commit()
    assert _drain(runner, 2) == 2
    assert runner.holdup() is None


def _queues_command(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobledger.cli", "--database-url", url, "queues"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_held_back_runner_says_why(
    private_postgres: Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = private_postgres
    monkeypatch.setattr("jobledger.catchup.HOLDUP_REPORT_INTERVAL", 0.05)
    catchup = CatchUp(ledger, Recorder(), poll_interval=0.02)
    runner = threading.Thread(target=catchup.run_forever, daemon=True)
    with ledger.engine.connect() as slow, caplog.at_level("WARNING", "jobledger.catchup"):
        slow_tx = slow.begin()
        slow.execute(select(func.pg_current_xact_id()))
        ledger.enqueue("waiting")
        runner.start()
        wait_for(lambda: "waits behind" in caplog.text, timeout=10, step=0.02)
        slow_tx.commit()
    catchup.stop()
    runner.join(10)
    assert "projection 'recorder': 1 committed event waits behind the open transaction" in (
        caplog.text
    )


WRITER = """
import sys
from jobledger import Ledger
from jobledger.identity import new_identity

url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
me = new_identity()
with Ledger(url, heartbeat_interval=0) as ledger:
    for n in range(count):
        job_id = f"{prefix}-{n}"
        ledger.enqueue(job_id)
        claim = ledger.claim(job_id, me)
        ledger.heartbeat(claim)
        ledger.complete(claim)
"""


@pytest.mark.slow
def test_concurrent_writers_and_a_long_transaction_deliver_everything_once_in_order(
    private_postgres: Ledger,
) -> None:
    ledger = private_postgres
    url = ledger.engine.url.render_as_string(hide_password=False)
    failures: list[BaseException] = []
    # two runners compete for the same checkpoint
    catchups = [CatchUp(ledger, Recorder(), batch_size=7, poll_interval=0.01) for _ in range(2)]

    def run(catchup: CatchUp) -> None:
        try:
            catchup.run_forever()
        except BaseException as exc:
            failures.append(exc)

    runners = [threading.Thread(target=run, args=(catchup,)) for catchup in catchups]
    for thread in runners:
        thread.start()
    with ledger.engine.connect() as slow:
        slow_tx = slow.begin()
        slow.execute(select(func.pg_current_xact_id()))
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, url, f"w{n}", "40"], cwd=ROOT)
            for n in range(3)
        ]
        deadline = time.monotonic() + 60
        while len(_positions(ledger)) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)  # let the writers commit plenty while this transaction is open
        append_in(slow, "late")
        committed_meanwhile = len(_positions(ledger))
        held_back = len(_delivered(ledger))
        slow_tx.commit()
    assert all(writer.wait(60) == 0 for writer in writers)
    expected = _positions(ledger)
    wait_for(lambda: len(_delivered(ledger)) >= len(expected), timeout=60)
    for catchup in catchups:
        catchup.stop()
    for thread in runners:
        thread.join(30)
    assert failures == []

    delivered = _delivered(ledger)
    assert len(expected) == 3 * 40 * 4 + 1
    assert sorted(d[0] for d in delivered) == expected  # every event, none twice
    versions: dict[str, list[int]] = collections.defaultdict(list)
    for _, job_id, version in delivered:
        versions[job_id].append(version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    # Every writer took its transaction id after the slow one: nothing could pass it.
    assert committed_meanwhile >= 100
    assert held_back == 0
    assert delivered[0][1] == "late"
    assert ledger.verify().ok
