"""One lifecycle for every long-running part: context managers, run_forever/stop, and
``handle_signals`` in the constructor; the older spellings still work, with a warning."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from jobledger import JobStatus, Ledger, RecoveryProjector, SqlLiveness, Worker
from jobledger.catchup import CatchUp, Projection
from jobledger.records import Event
from jobledger.redelivery import Redeliverer


class _Counter(Projection):
    name = "lifecycle-counter"

    def __init__(self) -> None:
        self.seen = 0

    def handle(self, event: Event, connection: object) -> None:
        self.seen += 1


class _Closable:
    name = "closable"

    def __init__(self) -> None:
        self.closed = 0

    def deliver(self, job: JobStatus) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


def _in_thread(run: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _ends(thread: threading.Thread) -> None:
    thread.join(10)
    assert not thread.is_alive()


def test_projector_runs_until_stopped_in_a_block(ledger: Ledger) -> None:
    with (
        SqlLiveness(ledger, ttl=1.0) as liveness,
        RecoveryProjector(ledger, liveness, interval=0.05) as projector,
    ):
        thread = _in_thread(projector.run_forever)  # not the main thread: no signals
        deadline = time.monotonic() + 10
        while projector.counters.sweeps < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    _ends(thread)  # leaving the block stopped it
    assert projector.counters.sweeps >= 2


def test_projector_handle_signals_true_refuses_a_thread(ledger: Ledger) -> None:
    liveness = SqlLiveness(ledger, ttl=1.0)
    projector = RecoveryProjector(ledger, liveness, handle_signals=True)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            projector.run_forever()
        except RuntimeError as exc:
            failures.append(exc)

    _ends(_in_thread(run))
    assert len(failures) == 1
    assert "main thread" in str(failures[0])
    liveness.close()


def test_projector_run_forever_handle_signals_still_works_with_a_warning(
    ledger: Ledger,
) -> None:
    liveness = SqlLiveness(ledger, ttl=1.0)
    projector = RecoveryProjector(ledger, liveness, interval=0.05)
    projector.stop()  # run_forever then returns at once
    with pytest.warns(DeprecationWarning, match="handle_signals"):
        projector.run_forever(handle_signals=True)  # in the main thread, as before
    with pytest.warns(DeprecationWarning, match="handle_signals"):
        projector.run_forever(handle_signals=False)
    liveness.close()


def test_catchup_stops_by_its_own_stop(ledger: Ledger) -> None:
    ledger.enqueue("one")
    projection = _Counter()
    with CatchUp(ledger, projection, poll_interval=0.01) as runner:
        thread = _in_thread(runner.run_forever)
        deadline = time.monotonic() + 10
        while projection.seen < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    _ends(thread)
    assert projection.seen == 1


def test_catchup_still_takes_the_callers_event_with_a_warning(ledger: Ledger) -> None:
    stop = threading.Event()
    stop.set()
    runner = CatchUp(ledger, _Counter())
    with pytest.warns(DeprecationWarning, match="run_forever"):
        runner.run_forever(stop, 0.01)  # returns: the caller's event is set
    assert runner.poll_interval == 0.01


def test_redeliverer_closes_its_target_with_the_block(ledger: Ledger) -> None:
    target = _Closable()
    with Redeliverer(ledger, target, interval=0.01) as redeliverer:
        thread = _in_thread(redeliverer.run_forever)
    _ends(thread)
    assert target.closed == 1


def test_worker_handle_signals_none_in_a_thread_installs_nothing(ledger: Ledger) -> None:
    liveness = SqlLiveness(ledger, ttl=1.0)
    started: list[Worker] = []
    thread = _in_thread(
        lambda: started.append(Worker(ledger, liveness, handle_signals=None).start())
    )
    _ends(thread)
    (worker,) = started
    worker.stop(timeout=0)
    assert not liveness.alive([worker.identity])[worker.identity]
    liveness.close()


def test_worker_stops_once_when_two_threads_stop_it(ledger: Ledger) -> None:
    ledger.enqueue("held")
    liveness = SqlLiveness(ledger, ttl=1.0)
    worker = Worker(ledger, liveness).start()
    worker.claim("held")
    barrier = threading.Barrier(2)

    def stop() -> None:
        barrier.wait()
        worker.stop(timeout=0)

    threads = [_in_thread(stop) for _ in range(2)]
    for thread in threads:
        _ends(thread)
    history = [event.type for event in ledger.history("held")]
    assert history == ["enqueued", "claimed", "released"]  # released once, not twice
    liveness.close()
