"""Putting the web view together and serving it with uvicorn.

:func:`build` makes the app and the background work for a ledger and a liveness
backend (tests and embedding use it); :func:`serve` runs it until SIGINT/SIGTERM,
which uvicorn handles, and then stops the background threads.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from starlette.types import ASGIApp

from ..database import mask
from ..errors import ConfigurationError
from ..ledger import Ledger
from ..liveness import Liveness
from .app import create_app
from .background import StatsCatchUp, VerifyWatch
from .reads import Board, Settings


@dataclass
class View:
    """A built web view: the ASGI app and what runs beside it."""

    app: ASGIApp
    verify: VerifyWatch
    catch_up: StatsCatchUp | None

    def start(self) -> None:
        if self.catch_up is not None:
            self.catch_up.start()
        self.verify.start()

    def stop(self) -> None:
        if self.catch_up is not None:
            self.catch_up.stop()
        self.verify.stop()


def build(
    ledger: Ledger,
    liveness: Liveness,
    *,
    settings: Settings | None = None,
    secret: str | None = None,
    catch_up: bool = True,
    verify_every: float = 3600.0,
    refresh_seconds: float = 5.0,
) -> View:
    """The web view of ``ledger``; call ``start()`` to begin its background work."""
    board = Board(ledger, liveness, settings)
    verify = VerifyWatch(ledger, verify_every)
    app = create_app(
        board,
        verify,
        secret=secret,
        database=mask(ledger.engine.url),
        refresh_seconds=refresh_seconds,
    )
    return View(app, verify, StatsCatchUp(ledger) if catch_up else None)


def check_binding(host: str, secret: str | None, allow_open: bool) -> None:
    """``ConfigurationError`` for a non-loopback address without a secret (unless allowed)."""
    if secret is not None or allow_open or is_loopback(host):
        return
    raise ConfigurationError(
        f"refusing to serve {host} without authentication: set JOBLEDGER_WEB_TOKEN or "
        "--token-file, or pass --no-auth if a proxy in front authenticates"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(view: View, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``view`` until interrupted."""
    import uvicorn  # noqa: PLC0415 (only the serving process needs it)

    view.start()
    try:
        with _sigterm_is_a_clean_stop():
            uvicorn.run(
                view.app,
                host=host,
                port=port,
                log_level=log_level,
                proxy_headers=False,
                server_header=False,
                # uvicorn's loggers go through the CLI's handler (terminal.VisibleFormatter), so
                # nothing a client sends reaches the terminal as a control character.
                log_config=None,
            )
    finally:
        view.stop()


@contextlib.contextmanager
def _sigterm_is_a_clean_stop() -> Iterator[None]:
    """Let SIGTERM end the server with status 0, as it ends ``jobledger recover``.

    uvicorn shuts down gracefully on SIGTERM, puts back the handler it found and
    raises the signal again; with the default handler that kills the process
    (status 143), which init systems and scripts read as a failure.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # uvicorn handles no signal there either
        return
    previous = signal.signal(signal.SIGTERM, _stop_requested)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_requested(signum: int, frame: FrameType | None) -> None:
    """The re-raised SIGTERM after uvicorn's shutdown: nothing left to do."""
