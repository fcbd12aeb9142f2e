"""The lifecycle of jobledger's long-running loops: the recovery projector, the
redeliverer and catch-up runners.

- ``run_once()`` does what can be done now and returns; ``run_forever()``
  repeats it until :meth:`Runner.stop` is called (from any thread or a signal
  handler), then returns after the round under way.
- The constructor's ``handle_signals`` decides whether SIGTERM and SIGINT call
  ``stop()`` while ``run_forever()`` runs (see :mod:`jobledger.signals`).
- A runner is a context manager: leaving the block stops it and calls
  :meth:`Runner.close`.

:class:`~jobledger.worker.Worker` follows the same rules where they apply:
``handle_signals`` in its constructor, ``stop()`` from any thread, a context
manager; its work loop is yours.
"""

from __future__ import annotations

import abc
import logging
import signal
import threading
from types import FrameType
from typing import Any, TypeVar

from . import signals

_Runner = TypeVar("_Runner", bound="Runner")


class Runner(abc.ABC):
    """A loop that runs until :meth:`stop`; subclasses say what one round does."""

    def __init__(self, *, handle_signals: bool | None) -> None:
        self.handle_signals = handle_signals
        self._stop = threading.Event()

    @abc.abstractmethod
    def run_once(self) -> Any:
        """Do what can be done now."""

    @abc.abstractmethod
    def _round(self) -> float:
        """One round of :meth:`run_forever`; seconds to wait before the next."""

    def run_forever(self) -> None:
        """Run rounds until :meth:`stop` (or, with ``handle_signals``, SIGTERM or SIGINT)."""
        self._run_until_stopped(self.handle_signals)

    def _run_until_stopped(self, handle_signals: bool | None) -> None:
        stop_on: dict[int, signals.Handler] = {
            signal.SIGTERM: self._on_signal,
            signal.SIGINT: self._on_signal,
        }
        previous = signals.install_for(handle_signals, stop_on, str(self))
        self._starting()
        try:
            while not self._stop.is_set():
                self._stop.wait(self._round())
        finally:
            signals.restore(previous)
            self._stopped()

    def stop(self) -> None:
        """Make :meth:`run_forever` return after the current round; safe from any thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what this runner holds (nothing, unless a subclass says so)."""

    def __enter__(self: _Runner) -> _Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def _starting(self) -> None:  # noqa: B027 (optional hook)
        """Called as :meth:`run_forever` begins, after the signal handlers are in place."""

    def _stopped(self) -> None:  # noqa: B027 (optional hook)
        """Called as :meth:`run_forever` returns."""

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Logged under the subclass's module, where the rest of its story is logged.
        log = logging.getLogger(type(self).__module__)
        log.info("%s: %s, stopping", self, signal.Signals(signum).name)
        self.stop()
