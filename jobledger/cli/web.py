"""``jobledger web``: serve the read-only web view (needs the ``web`` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from ..liveness import DEFAULT_TTL
from . import output
from .params import Seconds
from .settings import Settings, pass_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File whose first line is the secret (else env JOBLEDGER_WEB_TOKEN; none: no auth). "
    "Sent as 'Authorization: Bearer SECRET', or basic auth as user 'jobledger'.",
)
@click.option(
    "--no-auth",
    "allow_open",
    is_flag=True,
    help="Serve a non-loopback address without a secret (a proxy in front authenticates).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="The recovery policy's cap: jobs at it are listed as exhausted.",
)
@click.option(
    "--silent-after",
    type=Seconds(),
    default=60.0,
    show_default=True,
    help="Claims without a heartbeat this long are listed as silent.",
)
@click.option(
    "--ttl",
    type=Seconds(),
    default=DEFAULT_TTL,
    show_default=True,
    help="The workers' liveness TTL (how long ago each refreshed is TTL minus what is left).",
)
@click.option(
    "--verify-every",
    type=Seconds(zero=True),
    default=3600.0,
    show_default=True,
    help="Run verify in the background this often (0: never).",
)
@click.option(
    "--catch-up/--no-catch-up",
    default=True,
    show_default=True,
    help="Keep the queue figures (queue_stats) current from this process.",
)
@click.option(
    "--refresh",
    type=Seconds(zero=True),
    default=5.0,
    show_default=True,
    help="Pages refresh themselves this often (0: never).",
)
@pass_settings
def web(
    settings: Settings,
    host: str,
    port: int,
    token_file: Path | None,
    allow_open: bool,
    max_attempts: int,
    silent_after: float,
    ttl: float,
    verify_every: float,
    catch_up: bool,
    refresh: float,
) -> None:
    """Serve a read-only web view of the ledger (and its data as JSON under /api)."""
    try:
        from ..web import reads, serve  # noqa: PLC0415
        from ..web.auth import load_secret  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(
            f"the web view needs the 'web' extra: pip install 'jobledger[web]' ({exc})"
        ) from None
    secret = load_secret(token_file)
    serve.check_binding(host, secret, allow_open)
    output.log_to_stderr(settings.debug)
    with settings.ledger() as ledger:
        ledger.last_position()  # a missing schema or database: one clear line now, not 503s
        liveness = settings.liveness(ledger, ttl)
        try:
            view = serve.build(
                ledger,
                liveness,
                settings=reads.Settings(max_attempts=max_attempts, silent_after=silent_after),
                secret=secret,
                catch_up=catch_up,
                verify_every=verify_every,
                refresh_seconds=refresh,
            )
            click.echo(
                f"jobledger web on http://{host}:{port}/ "
                f"({'authentication required' if secret else 'no authentication'})",
                err=True,
            )
            serve.serve(view, host, port, "debug" if settings.debug else "info")
        finally:
            liveness.close()
