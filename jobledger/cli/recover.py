"""``jobledger recover``: the recovery projector, a sealer and optionally a redeliverer beside it.

The sealer (:mod:`jobledger.sealer`) runs by default, so that a deployment that
runs the projector keeps the ledger-wide anchor sealed; ``--no-seal`` leaves it to a
``jobledger seal`` elsewhere. Several sealers at once take turns on its checkpoint.

The ``--redeliver`` target is checked before the ledger is opened, so a typo in
``celery:MODULE:ATTR`` or ``taskiq:MODULE:ATTR`` is a usage error rather than a
half-started daemon. RQ, Celery and taskiq are imported only when asked for. So
is ``prometheus_client``: with ``--metrics-port`` the port is bound before
anything else happens, so a port in use or an unknown host is one clear error
and nothing has run.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from .. import terminal
from ..liveness import DEFAULT_TTL
from ..policy import RecoveryPolicy
from . import output
from .params import PerQueue, Seconds
from .settings import Settings, pass_settings, warn_of_secrets_on_argv

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..observers import RecoveryObserver
    from ..ops import LedgerGauges, OpsServer
    from ..recovery import Recovery
    from ..redelivery import RedeliveryTarget
    from ..runner import Runner


@click.command()
@click.option("--once", is_flag=True, help="One sweep, then exit.")
@click.option(
    "--interval", type=Seconds(), default=1.0, show_default=True, help="Seconds between sweeps."
)
@click.option(
    "--ttl",
    type=Seconds(),
    default=DEFAULT_TTL,
    show_default=True,
    envvar="JOBLEDGER_TTL",
    help="Liveness TTL the workers use, in seconds (env JOBLEDGER_TTL).",
)
@click.option(
    "--grace",
    type=Seconds(zero=True),
    default=None,
    help="Minimum claim age before abandoning [default: TTL].",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Requeue abandoned jobs up to this many attempts.",
)
@click.option(
    "--queue-max-attempts",
    type=PerQueue(click.IntRange(min=1)),
    multiple=True,
    metavar="QUEUE=N",
    help="Per-queue attempt cap.",
)
@click.option(
    "--heartbeat-timeout",
    default=None,
    type=Seconds(),
    help="Abandon jobs of live processes silent this long.",
)
@click.option(
    "--queue-heartbeat-timeout",
    type=PerQueue(Seconds()),
    multiple=True,
    metavar="QUEUE=SECONDS",
    help="Per-queue heartbeat timeout.",
)
@click.option(
    "--abandon-concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Dead claims ended at once, each in its own transaction [default: 4; 1 on SQLite].",
)
@click.option(
    "--redeliver",
    default=None,
    metavar="rq|celery:MODULE:ATTR|taskiq:MODULE:ATTR",
    help="Hand requeued jobs back to this job system (at-least-once, from a checkpoint): "
    "RQ, the Celery app ATTR of MODULE, or the taskiq broker ATTR of MODULE.",
)
@click.option(
    "--rq-url",
    envvar="JOBLEDGER_RQ_URL",
    default=None,
    help="RQ's Redis for --redeliver rq [default: --redis-url] (env JOBLEDGER_RQ_URL).",
)
@click.option(
    "--seal/--no-seal",
    default=True,
    show_default=True,
    help="Also seal new events into the ledger-wide anchor (see `jobledger seal`).",
)
@click.option("--json", "as_json", is_flag=True, help="With --once: the decisions as JSON lines.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="JOBLEDGER_METRICS_PORT",
    help="Serve /metrics (Prometheus), /healthz and /readyz on this port; 0 picks a free one "
    "(env JOBLEDGER_METRICS_PORT). Needs jobledger[metrics].",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    envvar="JOBLEDGER_METRICS_HOST",
    help="Address to serve metrics on; 0.0.0.0 for every interface (env JOBLEDGER_METRICS_HOST).",
)
@click.option(
    "--metrics-interval",
    type=Seconds(),
    default=15.0,
    show_default=True,
    help="Seconds between reads of per-queue job counts and catch-up lag.",
)
@click.option(
    "--metrics-max-queues",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help='Queues with a label of their own; later ones are counted as queue="other".',
)
@click.option(
    "--stall-after",
    type=Seconds(),
    default=60.0,
    show_default=True,
    help="/healthz fails once a sweep is this many seconds overdue.",
)
@pass_settings
def recover(
    settings: Settings,
    once: bool,
    interval: float,
    ttl: float,
    grace: float | None,
    max_attempts: int,
    queue_max_attempts: tuple[tuple[str, int], ...],
    heartbeat_timeout: float | None,
    queue_heartbeat_timeout: tuple[tuple[str, float], ...],
    abandon_concurrency: int | None,
    redeliver: str | None,
    rq_url: str | None,
    seal: bool,
    as_json: bool,
    metrics_port: int | None,
    metrics_host: str,
    metrics_interval: float,
    metrics_max_queues: int,
    stall_after: float,
) -> None:
    """Abandon (and requeue by policy) the jobs of processes that are no longer alive.

    Runs until SIGTERM or SIGINT; every decision is logged to stderr. It also
    seals new events into the ledger-wide anchor (unless --no-seal). With
    --redeliver, requeued jobs are also handed back to their job system.
    """
    from ..recovery import RecoveryProjector  # noqa: PLC0415
    from ..redelivery import Redeliverer  # noqa: PLC0415
    from ..sealer import Sealer  # noqa: PLC0415

    output.log_to_stderr(settings.debug)
    if metrics_port is not None and once:
        source = click.get_current_context().get_parameter_source("metrics_port")
        if source != click.core.ParameterSource.ENVIRONMENT:
            raise click.UsageError("--metrics-port serves a running projector: not with --once")
        metrics_port = None  # JOBLEDGER_METRICS_PORT is for the daemon, not a one-off sweep
    warn_of_secrets_on_argv(
        click.get_current_context(),
        database_url="JOBLEDGER_DATABASE_URL",
        redis_url="JOBLEDGER_REDIS_URL",
        rq_url="JOBLEDGER_RQ_URL",
    )
    make_target = _redelivery_target(redeliver, rq_url or settings.redis_url)
    ops = None
    if metrics_port is not None:
        ops = _Ops(metrics_host, metrics_port, metrics_max_queues, stall_after)
    policy = RecoveryPolicy(
        max_attempts=max_attempts,
        max_attempts_by_queue=dict(queue_max_attempts),
        heartbeat_timeout=heartbeat_timeout,
        heartbeat_timeout_by_queue=dict(queue_heartbeat_timeout),
    )
    with settings.ledger() as ledger, contextlib.ExitStack() as cleanup:
        observer = ops.observe(ledger, metrics_interval, cleanup) if ops is not None else None
        liveness = settings.liveness(ledger, ttl)
        projector = RecoveryProjector(
            ledger,
            liveness,
            policy,
            interval=interval,
            grace=grace,
            observer=observer,
            abandon_concurrency=abandon_concurrency,
        )
        target = make_target(ledger) if make_target is not None else None
        redeliverer = None
        if target is not None:
            redeliverer = Redeliverer(ledger, target, observer=observer)
        sealer = Sealer(ledger, interval=interval) if seal else None
        try:
            if not once:
                with _running_beside(redeliverer), _running_beside(sealer):
                    projector.run_forever()
                return
            recovered = projector.run_once()
            for beside in (redeliverer, sealer):
                if beside is not None:
                    beside.run_once()
        finally:
            liveness.close()
            if redeliverer is not None:
                redeliverer.close()
    _print_recovered(recovered, as_json)


def _print_recovered(recovered: list[Recovery], as_json: bool) -> None:
    """What one sweep (``--once``) did: a line per job, as text or JSON."""
    for recovery in recovered:
        if as_json:
            click.echo(output.to_json(recovery))
        else:
            terminal.echo(
                f"{recovery.job_id}: abandoned ({recovery.reason}); "
                f"{'requeued' if recovery.requeued else 'left abandoned'}"
            )
    if not as_json:
        click.echo(f"{len(recovered)} jobs recovered", err=True)


class _Ops:
    """``--metrics-port``: the HTTP server, bound at once, then metrics and health."""

    def __init__(self, host: str, port: int, max_queues: int, stall_after: float) -> None:
        try:
            from prometheus_client import (  # noqa: PLC0415 (an optional dependency)
                REGISTRY,
                disable_created_metrics,
            )

            from .. import ops  # noqa: PLC0415
        except ImportError as exc:
            raise click.UsageError(
                f"--metrics-port needs prometheus_client: pip install 'jobledger[metrics]' ({exc})"
            ) from exc
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = REGISTRY  # with the process, platform and GC collectors
        self.queues = ops.BoundedLabels(max_queues)
        self.metrics = ops.RecoveryMetrics(self.registry, queues=self.queues)
        self.health = ops.Health(stall_after)
        shown = terminal.visible(f"{host}:{port}")
        try:
            self.server: OpsServer = ops.OpsServer(host, port, self.registry, self.health)
        except (OSError, UnicodeError) as exc:  # in use, no such address, unknown name
            raise click.ClickException(
                f"cannot serve metrics on {shown}: {terminal.visible(str(exc))}"
            ) from exc

    def observe(
        self, ledger: Ledger, interval: float, cleanup: contextlib.ExitStack
    ) -> RecoveryObserver:
        """Serve now, refresh the ledger's gauges; stopped when ``cleanup`` closes."""
        from .. import ops  # noqa: PLC0415
        from ..observers import Observers  # noqa: PLC0415

        gauges: LedgerGauges = ops.LedgerGauges(
            ledger, self.registry, queues=self.queues, interval=interval
        ).start()
        cleanup.callback(gauges.stop)
        self.server.start()
        cleanup.callback(self.server.stop)
        url = terminal.visible(self.server.url)
        click.echo(f"serving {url}/metrics, /healthz and /readyz", err=True)
        return Observers([self.metrics, self.health])


def _redelivery_target(
    spec: str | None, url: str | None
) -> Callable[[Ledger], RedeliveryTarget] | None:
    """What makes the ``--redeliver`` target once the ledger is open; checked up front."""
    if spec is None:
        return None
    if spec == "rq":
        if url is None:
            raise click.UsageError("--redeliver rq needs --rq-url or --redis-url (RQ's Redis)")
        from ..liveness.clients import is_cluster_or_sentinel  # noqa: PLC0415 (redis-py)

        if is_cluster_or_sentinel(url):
            raise click.UsageError(
                "--redeliver rq needs one Redis server (redis:// or rediss://) in --rq-url; "
                "RQ cannot use a Redis Cluster or Sentinel URL"
            )
        from ..integrations.rq import RQTarget  # noqa: PLC0415 (rq is optional)

        rq_url = url
        return lambda _ledger: RQTarget(rq_url)
    if spec.startswith("celery:"):
        app = _imported("celery", spec.removeprefix("celery:"), "send_task", "a Celery app")
        from ..integrations.celery import CeleryTarget  # noqa: PLC0415 (celery is optional)

        return lambda ledger: CeleryTarget(app, ledger)
    if spec.startswith("taskiq:"):
        broker = _imported("taskiq", spec.removeprefix("taskiq:"), "find_task", "a taskiq broker")
        from ..integrations.taskiq import TaskiqTarget  # noqa: PLC0415 (taskiq is optional)

        return lambda ledger: TaskiqTarget(broker, _url_of(ledger))
    raise click.BadParameter(
        f"{terminal.visible(spec)} (expected rq, celery:MODULE:ATTR or taskiq:MODULE:ATTR)",
        param_hint="--redeliver",
    )


def _imported(kind: str, where: str, method: str, what: str) -> Any:
    """The object named ``MODULE:ATTR`` (a Celery app, a taskiq broker), imported the way
    ``celery -A`` or ``taskiq worker`` would; it must have ``method``."""
    module_name, _, attr = where.partition(":")
    shown = terminal.visible(where)
    if not module_name or not attr:
        raise click.BadParameter(
            f"{kind}:{shown} (expected {kind}:MODULE:ATTR)", param_hint="--redeliver"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `celery -A` does: the app lives beside you
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {shown}: {exc}", param_hint="--redeliver") from exc
    found = getattr(module, attr, None)
    if not callable(getattr(found, method, None)):
        raise click.BadParameter(f"{shown} is not {what}", param_hint="--redeliver")
    return found


def _url_of(ledger: Ledger) -> str:
    """The ledger's URL with its password, for a target that opens its own Ledger."""
    return ledger.engine.url.render_as_string(hide_password=False)


@contextlib.contextmanager
def _running_beside(runner: Runner | None) -> Iterator[None]:
    """Run ``runner`` (the redeliverer, the sealer) in a thread for the duration of the block."""
    if runner is None:
        yield
        return
    thread = threading.Thread(target=runner.run_forever, name=str(runner), daemon=True)
    thread.start()
    try:
        yield
    finally:
        runner.stop()
        thread.join()
