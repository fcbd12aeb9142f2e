"""A minimal HTTP server for ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

The standard library's threading server, in a daemon thread: scrapes and probes
only read what the loops already recorded, so they never wait for the database.
Anything else answers 404; only GET and HEAD are served.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from .health import Health, Verdict

log = logging.getLogger("jobledger.ops")


class OpsServer(ThreadingHTTPServer):
    """``registry`` at ``/metrics``, ``health``'s verdicts at ``/healthz`` and ``/readyz``."""

    daemon_threads = True

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: Health | None
    ) -> None:
        # The address family follows the host: "::1" is IPv6, "127.0.0.1" or a name IPv4.
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.address_family = family
        self.registry = registry
        self.health = health
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, if asked for port 0)."""
        port: int = self.server_address[1]
        return port

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def start(self) -> OpsServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="jobledger-ops-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=10)
        self.server_close()


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    registry: CollectorRegistry = REGISTRY,
    health: Health | None = None,
) -> OpsServer:
    """Listen on ``host:port`` now (``OSError`` if it cannot: in use, unknown host) and
    serve in a daemon thread; :meth:`OpsServer.stop` ends it. Without ``health``,
    ``/healthz`` and ``/readyz`` answer 404."""
    return OpsServer(host, port, registry, health).start()


class _Handler(BaseHTTPRequestHandler):
    server: OpsServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a client may take to send its request: idle sockets are closed

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        health = self.server.health
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST, send_body)
        elif path == "/healthz" and health is not None:
            self._verdict(health.live(), send_body)
        elif path == "/readyz" and health is not None:
            self._verdict(health.ready(), send_body)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", send_body)

    def _verdict(self, verdict: Verdict, send_body: bool) -> None:
        body = f"{verdict.reason}\n".encode()
        self._send(200 if verdict.ok else 503, body, "text/plain; charset=utf-8", send_body)

    def _send(self, status: int, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %r", self.address_string(), format % args)  # repr: a path is anyone's text
