"""Process identity: ``hostname:pid:nonce``.

The nonce is random per process start, so a recycled pid on the same host
never inherits a dead process's claims or liveness key.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass

from .errors import InvalidIdentity

# Hostnames may carry dots and dashes but never a colon; the nonce is hex.
_IDENTITY = re.compile(
    r"^(?P<host>[A-Za-z0-9_.\-]{1,200}):(?P<pid>[0-9]{1,10}):(?P<nonce>[0-9a-f]{8,32})$"
)


@dataclass(frozen=True, slots=True)
class Identity:
    host: str
    pid: int
    nonce: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.nonce}"


def parse(text: str) -> Identity:
    """Split ``text`` into host, pid and nonce; ``InvalidIdentity`` if it is not one."""
    match = _IDENTITY.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidIdentity(
            f"{text!r} is not a process identity (expected hostname:pid:nonce, "
            "e.g. 'web-1:4242:9f1c2ab07d3e4410')"
        )
    return Identity(match["host"], int(match["pid"]), match["nonce"])


def validate(text: str) -> str:
    """``text`` itself, if it is a well-formed identity (every claim checks one: the
    match alone, without building the parts)."""
    if type(text) is not str or _IDENTITY.match(text) is None:
        parse(text)  # raises InvalidIdentity, as parse() says it
    return text


def new_identity(host: str | None = None, pid: int | None = None) -> str:
    """A fresh identity for this process (a new nonce every call)."""
    host = host or socket.gethostname()
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", host)[:200] or "localhost"
    return str(Identity(host, os.getpid() if pid is None else pid, secrets.token_hex(8)))
