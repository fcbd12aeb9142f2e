"""Who may look: an optional shared secret, as a bearer token or a basic-auth password.

The secret comes from an environment variable or a file, never from the command
line (which any local user can read in ``ps``), and is never printed. Requests
compare it in constant time. Without a secret every request is let in, which
``jobledger web`` allows only on a loopback address.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigurationError

#: The environment variable that may hold the secret.
TOKEN_VARIABLE = "JOBLEDGER_WEB_TOKEN"
#: The user name basic auth expects with the secret as password.
DEFAULT_USER = "jobledger"


def load_secret(token_file: Path | None) -> str | None:
    """The secret from ``token_file`` (first line) or ``$JOBLEDGER_WEB_TOKEN``; ``None`` if unset.

    ``ConfigurationError`` for a file that cannot be read or is empty: a typo must not
    silently open the view to everyone.
    """
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the token file {str(token_file)!r}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:  # its message would quote the secret's bytes
            raise ConfigurationError(f"the token file {str(token_file)!r} is not UTF-8") from None
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise ConfigurationError(f"the token file {str(token_file)!r} is empty")
        return secret
    value = os.environ.get(TOKEN_VARIABLE, "").strip()
    return value or None


class Guard:
    """ASGI middleware: lets a request in if it presents the secret (or if there is none)."""

    def __init__(self, app: ASGIApp, secret: str | None, user: str = DEFAULT_USER) -> None:
        self.app = app
        self._secret = secret.encode("utf-8") if secret is not None else None
        self._user = user.encode("utf-8")

    def __repr__(self) -> str:  # never the secret
        return f"Guard(required={self._secret is not None})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._secret is None or self.admits(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        refusal = PlainTextResponse(
            "authentication required\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="jobledger", charset="UTF-8"'},
        )
        await refusal(scope, receive, send)

    def admits(self, headers: Headers) -> bool:
        assert self._secret is not None
        scheme, _, value = headers.get("authorization", "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer":
            return hmac.compare_digest(value.encode("utf-8"), self._secret)
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, _, password = decoded.partition(b":")
            # Both compared, always: the time taken says nothing about which one was wrong.
            good_user = hmac.compare_digest(user, self._user)
            good_password = hmac.compare_digest(password, self._secret)
            return good_user and good_password
        return False
