"""The lifecycle every long-running part follows: run_forever until stop() or a signal."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from jobledger import signals
from jobledger.runner import Runner


class _Counting(Runner):
    """Counts rounds; stops itself after ``rounds`` if given."""

    def __init__(self, rounds: int | None = None, handle_signals: bool | None = False) -> None:
        super().__init__(handle_signals=handle_signals)
        self.rounds, self.done, self.closed = rounds, 0, 0
        self.events: list[str] = []

    def __str__(self) -> str:
        return "counting runner"

    def run_once(self) -> int:
        self.done += 1
        if self.rounds is not None and self.done >= self.rounds:
            self.stop()
        return self.done

    def _round(self) -> float:
        self.run_once()
        return 0.001

    def _starting(self) -> None:
        self.events.append("starting")

    def _stopped(self) -> None:
        self.events.append("stopped")

    def close(self) -> None:
        self.closed += 1


def test_run_forever_runs_rounds_until_stop() -> None:
    runner = _Counting(rounds=3)
    runner.run_forever()
    assert runner.done == 3
    assert runner.stopping
    assert runner.events == ["starting", "stopped"]


def test_stop_from_another_thread_ends_the_loop() -> None:
    runner = _Counting()
    thread = threading.Thread(target=runner.run_forever)
    thread.start()
    runner.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_leaving_the_block_stops_and_closes() -> None:
    with _Counting() as runner:
        assert not runner.stopping
    assert runner.stopping
    assert runner.closed == 1


def test_sigterm_stops_a_runner_that_handles_signals_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    runner = _Counting(handle_signals=True)
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    runner.run_forever()  # returns once the handler called stop()
    timer.join()
    assert runner.stopping
    assert signal.getsignal(signal.SIGTERM) == before


def test_handle_signals_true_needs_the_main_thread() -> None:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            _Counting(rounds=1, handle_signals=True).run_forever()
        except RuntimeError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert [str(f) for f in failures] == [
        "handle_signals=True needs counting runner to start in the main thread"
    ]


def test_install_for_follows_handle_signals() -> None:
    def handler(*_: Any) -> None:
        pass

    before = signal.getsignal(signal.SIGUSR1)
    assert signals.install_for(False, {signal.SIGUSR1: handler}, "x") == {}
    assert signal.getsignal(signal.SIGUSR1) == before
    for handle in (True, None):  # this test runs in the main thread
        previous = signals.install_for(handle, {signal.SIGUSR1: handler}, "x")
        assert signal.getsignal(signal.SIGUSR1) is handler
        signals.restore(previous)
        assert signal.getsignal(signal.SIGUSR1) == before

    seen: list[dict[int, Any]] = []
    thread = threading.Thread(
        target=lambda: seen.append(signals.install_for(None, {signal.SIGUSR1: handler}, "x"))
    )
    thread.start()
    thread.join(5)
    assert seen == [{}]  # None outside the main thread: nothing installed, no error
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_runner_that_does_not_handle_signals_leaves_them_alone() -> None:
    before = signal.getsignal(signal.SIGINT)
    runner = _Counting(rounds=2, handle_signals=False)
    runner.run_forever()
    assert signal.getsignal(signal.SIGINT) == before


@pytest.mark.parametrize("handle", [True, None])
def test_handlers_are_in_place_while_running(handle: bool | None) -> None:
    seen: list[Any] = []

    class Peeking(_Counting):
        def _round(self) -> float:
            seen.append(signal.getsignal(signal.SIGTERM))
            self.stop()
            return 0.0

    Peeking(handle_signals=handle).run_forever()
    assert callable(seen[0])
    assert getattr(seen[0], "__self__", None) is not None  # the runner's own _on_signal
