"""Signal handlers for jobledger's long-running parts, installed one way everywhere.

Each part that can handle signals (:class:`~jobledger.worker.Worker`, the
recovery projector, the redeliverer, a catch-up runner) takes a
``handle_signals`` constructor keyword and passes it to :func:`install_for`
when it starts running: ``True`` installs its handlers and needs the main
thread, ``False`` never installs any, ``None`` installs them only when it
runs in the main thread. What it replaced is put back when it stops.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

Handler = Any  # what signal.signal takes and returns: a callable, SIG_DFL/SIG_IGN, or None


def install(handlers: Mapping[int, Handler]) -> dict[int, Handler]:
    """Set ``handlers`` (main thread only); the handlers they replace, for :func:`restore`."""
    return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}


def install_for(
    handle_signals: bool | None, handlers: Mapping[int, Handler], who: str
) -> dict[int, Handler]:
    """:func:`install` as ``handle_signals`` says (see above); what to :func:`restore` later.

    ``RuntimeError`` for ``True`` outside the main thread: Python delivers signals
    to the main thread only, so ``who`` would never see them.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if handle_signals and not in_main_thread:
        raise RuntimeError(f"handle_signals=True needs {who} to start in the main thread")
    if handle_signals is False or not in_main_thread:
        return {}
    return install(handlers)


def restore(previous: Mapping[int, Handler]) -> None:
    """Put back what :func:`install` replaced.

    Only the main thread may set handlers; elsewhere this does nothing. A handler
    installed outside Python reads as ``None`` and cannot be set again: it is skipped.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in previous.items():
        with contextlib.suppress(TypeError, ValueError):
            signal.signal(signum, handler)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` (in the main thread only).

    Its default action ends the process at once; raised instead, the exit runs
    every ``finally`` and ``with`` on the way out, which stop worker processes
    and roll transactions back as an error would.
    """

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = install({signal.SIGTERM: on_sigterm})
    try:
        yield
    finally:
        restore(previous)
