"""Installing and restoring signal handlers for the Worker and the recovery projector."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Mapping
from typing import Any

Handler = Any  # what signal.signal takes and returns: a callable, SIG_DFL/SIG_IGN, or None


def install(handlers: Mapping[int, Handler]) -> dict[int, Handler]:
    """Set ``handlers`` (main thread only); the handlers they replace, for :func:`restore`."""
    return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}


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
