"""The ``jobledger`` command line."""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, BinaryIO

import click

# Commands import what they use (the ledger, Alembic, Rich, redis-py) in their own
# bodies, so `--help` and each command start without the others' dependencies.
from . import bounds, signals, terminal, timeline
from .database import DEFAULT_URL, mask
from .encoding import json_int
from .errors import ConfigurationError, LedgerError
from .identity import new_identity
from .lifecycle import State
from .liveness import DEFAULT_TTL, Liveness, liveness_for
from .policy import RecoveryPolicy
from .records import JobStatus

if TYPE_CHECKING:
    from rich.progress import Progress

    from . import audit
    from .ledger import Ledger
    from .redelivery import Redeliverer, RedeliveryTarget


@dataclass
class Settings:
    database_url: str
    redis_url: str | None
    debug: bool

    def ledger(self) -> Ledger:
        from .ledger import Ledger  # noqa: PLC0415

        return Ledger(self.database_url)

    def liveness(self, ledger: Ledger, ttl: float = DEFAULT_TTL) -> Liveness:
        """Redis liveness if a Redis URL is set, else SQL leases where the ledger keeps them."""
        return liveness_for(ledger, self.redis_url, ttl)


pass_settings = click.make_pass_decorator(Settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="JOBLEDGER_DATABASE_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="SQLAlchemy URL of the ledger database (env JOBLEDGER_DATABASE_URL).",
)
@click.option(
    "--redis-url",
    envvar="JOBLEDGER_REDIS_URL",
    default=None,
    help="Redis URL for liveness; SQL leases are used without one (env JOBLEDGER_REDIS_URL).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for expected errors too.")
@click.pass_context
def cli(ctx: click.Context, database_url: str, redis_url: str | None, debug: bool) -> None:
    """jobledger: an honest, replayable record of every background job's life."""
    ctx.obj = Settings(database_url, redis_url, debug)


@cli.group()
def db() -> None:
    """Schema management."""


@db.command("upgrade")
@pass_settings
def db_upgrade(settings: Settings) -> None:
    """Create or upgrade the jobledger tables to the newest revision."""
    from . import migrate  # noqa: PLC0415

    ledger = settings.ledger()
    try:
        ledger.migrate()
        terminal.echo(
            f"{mask(settings.database_url)} is at revision {migrate.current(ledger.engine)}"
        )
    finally:
        ledger.close()


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="As a JSON object.")
@pass_settings
def db_current(settings: Settings, as_json: bool) -> None:
    """Show the schema revision of the database and the newest one; exit 1 if behind."""
    from . import migrate  # noqa: PLC0415

    with settings.ledger() as ledger:
        revision = migrate.current(ledger.engine)
    head = migrate.head()
    if as_json:
        click.echo(_as_json({"current": revision, "head": head, "up_to_date": revision == head}))
    else:
        terminal.echo(f"database: {revision or 'not migrated'}; newest: {head}")
    if revision != head:
        sys.exit(1)


# -- shared helpers ----------------------------------------------------------------------


def _as_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, indent=None, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=terminal.text(title), show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(terminal.text("" if cell is None else cell) for cell in row))
    terminal.console().print(table)


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = max(0.0, (datetime.now(timezone.utc) - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


class Seconds(click.types.FloatParamType):
    """A duration option: finite, above zero (or zero), at most a year (``bounds.seconds``).

    Click's own ``FloatRange`` lets ``nan`` and ``inf`` through, which then
    break a projector only at its first orphan.
    """

    name = "seconds"

    def __init__(self, zero: bool = False) -> None:
        self.zero = zero

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        try:
            return bounds.seconds(number, "the value", zero=self.zero)
        except ConfigurationError as exc:
            self.fail(str(exc), param, ctx)


if TYPE_CHECKING:  # click >= 8.4 types a parameter type by what it converts to
    _PerQueueBase = click.ParamType[tuple[str, Any]]
else:
    _PerQueueBase = click.ParamType


class PerQueue(_PerQueueBase):
    """A ``QUEUE=VALUE`` option, the value converted and checked by ``value_type``."""

    name = "queue=value"

    def __init__(self, value_type: click.ParamType[Any]) -> None:
        self.value_type = value_type

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        if isinstance(value, tuple):  # already converted
            return value
        queue, sep, raw = str(value).partition("=")
        if not sep or not queue:
            self.fail(f"expected QUEUE=VALUE, got {value!r}", param, ctx)
        try:
            return queue, self.value_type.convert(raw, param, ctx)
        except click.BadParameter as exc:
            self.fail(f"{value!r}: {exc.message}", param, ctx)


def _log_to_stderr(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        terminal.VisibleFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)


# -- producing and reading ---------------------------------------------------------------


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--queue", default="default", show_default=True, help="Queue of the new jobs.")
@click.option("--data", "data_json", default=None, help="JSON payload recorded with each job.")
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Skip ids already enqueued on this queue with this data (resumes an interrupted run).",
)
@pass_settings
def enqueue(
    settings: Settings,
    job_ids: tuple[str, ...],
    queue: str,
    data_json: str | None,
    skip_existing: bool,
) -> None:
    """Record new jobs (DuplicateJob if an id was ever used)."""
    data = None if data_json is None else _payload(data_json)
    with settings.ledger() as ledger:
        try:
            count = ledger.enqueue_many(
                [(job_id, data) for job_id in job_ids], queue=queue, skip_existing=skip_existing
            )
        except LedgerError as exc:
            if exc.committed:
                click.echo("rerun the same command with --skip-existing to resume", err=True)
            raise
    skipped = f" ({len(job_ids) - count} already there)" if skip_existing else ""
    click.echo(f"enqueued {count} job{'s' if count != 1 else ''} on queue {queue!r}{skipped}")


def _payload(text: str) -> Any:
    try:
        return json.loads(text, parse_int=json_int)
    except json.JSONDecodeError as exc:
        reason = f"not JSON: {exc}"
    except (ValueError, RecursionError) as exc:  # too long an integer, too deep a nesting
        reason = str(exc)
    raise click.BadParameter(reason, param_hint="--data")


_reason_option = click.option("--reason", default=None, help="Recorded with each event.")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@_reason_option
@pass_settings
def requeue(settings: Settings, job_ids: tuple[str, ...], reason: str | None) -> None:
    """Put abandoned or failed jobs back in their queue (an operator's retry)."""
    from .ledger import Ledger  # noqa: PLC0415

    _operator_moves(settings, job_ids, Ledger.requeue, reason, "requeued")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@_reason_option
@pass_settings
def cancel(settings: Settings, job_ids: tuple[str, ...], reason: str | None) -> None:
    """Withdraw jobs that are still waiting in their queue."""
    from .ledger import Ledger  # noqa: PLC0415

    _operator_moves(settings, job_ids, Ledger.cancel, reason, "cancelled")


def _operator_moves(
    settings: Settings,
    job_ids: tuple[str, ...],
    command: Callable[..., JobStatus],
    reason: str | None,
    done: str,
) -> None:
    """One event per job, in order, each its own transaction, recorded as this process.

    On the first refusal it stops, says how many were moved before, and exits 1.
    """
    me = new_identity()
    with settings.ledger() as ledger:
        for count, job_id in enumerate(job_ids):
            try:
                command(ledger, job_id, reason=reason, process=me)
            except LedgerError:
                if count:
                    click.echo(f"{done} {count} of {len(job_ids)} jobs before:", err=True)
                raise
    click.echo(f"{done} {len(job_ids)} job{'s' if len(job_ids) != 1 else ''}")


@cli.command()
@click.option(
    "--state", type=click.Choice([state.value for state in State]), help="Only jobs in this state."
)
@click.option("--queue", default=None, help="Only jobs of this queue.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many (0: all).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_settings
def jobs(
    settings: Settings, state: str | None, queue: str | None, limit: int, as_json: bool
) -> None:
    """List jobs from the status projection."""
    with settings.ledger() as ledger:
        found = list(itertools.islice(ledger.jobs(state=state, queue=queue), limit or None))
    if as_json:
        for status in found:
            click.echo(_as_json(status))
        return
    rows = [
        [s.job_id, s.queue, s.state, s.attempt, s.claimed_by, _ago(s.updated_at), s.last_error]
        for s in found
    ]
    columns = ["job", "queue", "state", "attempt", "held by", "changed", "last error"]
    _table(f"{len(found)} jobs", columns, rows)


# -- processes and recovery --------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_settings
def processes(settings: Settings, as_json: bool) -> None:
    """Live processes: identity, age, quiet flag, busy count and the jobs they hold."""
    with settings.ledger() as ledger:
        liveness = settings.liveness(ledger)
        try:
            live = liveness.processes()
            held: dict[str, list[str]] = {}
            for status in ledger.jobs(state="claimed"):
                held.setdefault(status.claimed_by or "", []).append(status.job_id)
        finally:
            liveness.close()
    if as_json:
        for info in live:
            click.echo(_as_json({**asdict(info), "held": held.get(info.identity, [])}))
        return
    rows = [
        [
            p.identity,
            _ago(p.started_at),
            "yes" if p.quiet else "",
            p.busy,
            ", ".join(held.get(p.identity, [])[:5])
            + (" …" if len(held.get(p.identity, [])) > 5 else ""),
        ]
        for p in live
    ]
    _table(
        f"{len(live)} live processes",
        ["identity", "age", "quiet", "busy", "holds"],
        rows,
    )
    orphaned = sorted(set(held) - {p.identity for p in live})
    if orphaned:
        count = sum(len(held[h]) for h in orphaned)
        click.echo(f"{count} claimed jobs are held by {len(orphaned)} processes that are not alive")


@cli.command()
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
    "--redeliver",
    default=None,
    metavar="rq|celery:MODULE:ATTR",
    help="Hand requeued jobs back to this job system (at-least-once, from a checkpoint): "
    "RQ, or the Celery app ATTR of MODULE.",
)
@click.option(
    "--rq-url",
    envvar="JOBLEDGER_RQ_URL",
    default=None,
    help="RQ's Redis for --redeliver rq [default: --redis-url] (env JOBLEDGER_RQ_URL).",
)
@click.option("--json", "as_json", is_flag=True, help="With --once: the decisions as JSON lines.")
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
    redeliver: str | None,
    rq_url: str | None,
    as_json: bool,
) -> None:
    """Abandon (and requeue by policy) the jobs of processes that are no longer alive.

    Runs until SIGTERM or SIGINT; every decision is logged to stderr. With
    --redeliver, requeued jobs are also handed back to their job system.
    """
    from .recovery import RecoveryProjector  # noqa: PLC0415
    from .redelivery import Redeliverer  # noqa: PLC0415

    _log_to_stderr(settings.debug)
    make_target = _redelivery_target(redeliver, rq_url or settings.redis_url)
    policy = RecoveryPolicy(
        max_attempts=max_attempts,
        max_attempts_by_queue=dict(queue_max_attempts),
        heartbeat_timeout=heartbeat_timeout,
        heartbeat_timeout_by_queue=dict(queue_heartbeat_timeout),
    )
    with settings.ledger() as ledger:
        liveness = settings.liveness(ledger, ttl)
        projector = RecoveryProjector(ledger, liveness, policy, interval=interval, grace=grace)
        target = make_target(ledger) if make_target is not None else None
        redeliverer = Redeliverer(ledger, target) if target is not None else None
        try:
            if not once:
                with _running_beside(redeliverer):
                    projector.run_forever()
                return
            recovered = projector.run_once()
            if redeliverer is not None:
                redeliverer.run_once()
        finally:
            liveness.close()
            if redeliverer is not None:
                redeliverer.close()
    for recovery in recovered:
        if as_json:
            click.echo(_as_json(recovery))
        else:
            terminal.echo(
                f"{recovery.job_id}: abandoned ({recovery.reason}); "
                f"{'requeued' if recovery.requeued else 'left abandoned'}"
            )
    if not as_json:
        click.echo(f"{len(recovered)} jobs recovered", err=True)


def _redelivery_target(
    spec: str | None, url: str | None
) -> Callable[[Ledger], RedeliveryTarget] | None:
    """What makes the ``--redeliver`` target once the ledger is open; checked up front."""
    if spec is None:
        return None
    if spec == "rq":
        if url is None:
            raise click.UsageError("--redeliver rq needs --rq-url or --redis-url (RQ's Redis)")
        from .integrations.rq import RQTarget  # noqa: PLC0415 (rq is optional)

        rq_url = url
        return lambda _ledger: RQTarget(rq_url)
    if spec.startswith("celery:"):
        app = _celery_app(spec.removeprefix("celery:"))
        from .integrations.celery import CeleryTarget  # noqa: PLC0415 (celery is optional)

        return lambda ledger: CeleryTarget(app, ledger)
    raise click.BadParameter(
        f"{terminal.visible(spec)} (expected rq or celery:MODULE:ATTR)", param_hint="--redeliver"
    )


def _celery_app(where: str) -> Any:
    """The Celery app named ``MODULE:ATTR``, imported the way ``celery -A`` would."""
    module_name, _, attr = where.partition(":")
    shown = terminal.visible(where)
    if not module_name or not attr:
        raise click.BadParameter(
            f"celery:{shown} (expected celery:MODULE:ATTR)", param_hint="--redeliver"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `celery -A` does: the app lives beside you
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {shown}: {exc}", param_hint="--redeliver") from exc
    app = getattr(module, attr, None)
    if not callable(getattr(app, "send_task", None)):
        raise click.BadParameter(f"{shown} is not a Celery app", param_hint="--redeliver")
    return app


@contextlib.contextmanager
def _running_beside(redeliverer: Redeliverer | None) -> Iterator[None]:
    """Run ``redeliverer`` in a thread for the duration of the block."""
    if redeliverer is None:
        yield
        return
    thread = threading.Thread(target=redeliverer.run_forever, name="redeliverer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        redeliverer.stop()
        thread.join()


@cli.command()
@click.option(
    "--keep",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="PATH",
    help="Write the demo's ledger to this new SQLite file and keep it, to try the CLI on.",
)
@pass_settings
def demo(settings: Settings, keep: str | None) -> None:
    """Three real workers, one SIGKILLed mid-job, recovered live (no servers needed).

    Uses a fresh SQLite file in a temporary folder, removed at the end (or the
    file given with --keep), and SQL leases, or Redis liveness when --redis-url
    is given. Exits 0 only if every job completed and the ledger verifies.
    """
    from .demo import run_demo  # noqa: PLC0415

    sys.exit(run_demo(settings.redis_url, keep=keep))


# -- auditing ----------------------------------------------------------------------------


def _progress_bar() -> Progress:
    """A progress bar on stderr (if it is a terminal), so stdout stays clean for results."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = terminal.console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        # No refresh thread: verify and rebuild fork worker processes only from a
        # single-threaded process, so the bar is redrawn from the progress callback.
        auto_refresh=False,
    )


def _tracked(bar: Progress, description: str) -> audit.Progress:
    task = bar.add_task(description, total=None)
    last_drawn = 0.0

    def update(done: int, total: int) -> None:
        nonlocal last_drawn
        bar.update(task, completed=done, total=total)
        if time.monotonic() - last_drawn >= 0.1 or done >= total:
            bar.refresh()
            last_drawn = time.monotonic()

    return update


def _instant(value: str | None) -> datetime | None:
    """An ISO-8601 instant (``Z`` or an offset; UTC if neither) for ``--at``."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 time (e.g. 2026-11-26T12:00:00Z)", param_hint="--at"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _report(report: audit.VerifyReport, as_json: bool, what: str) -> None:
    """Print a verification report; exit status 1 if it found problems."""
    if as_json:
        click.echo(
            _as_json(
                {
                    "ok": report.ok,
                    "jobs": report.jobs,
                    "events": report.events,
                    "problem_count": report.problem_count,
                    "problems": report.problems,
                }
            )
        )
    else:
        for problem in report.problems:
            terminal.echo(problem)
        hidden = report.problem_count - len(report.problems)
        if hidden:
            click.echo(f"... and {hidden} more problems")
        verdict = "OK" if report.ok else f"{report.problem_count} problems"
        click.echo(f"{what}: {report.events} events of {report.jobs} jobs: {verdict}", err=True)
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@pass_settings
def history(settings: Settings, job_id: str, as_json: bool) -> None:
    """A job's timeline: time, event, actor, attempt, token, data, and time between steps."""
    with settings.ledger() as ledger:
        steps = timeline.steps(ledger.history(job_id))
    if as_json:
        for step in steps:
            click.echo(_as_json(step.as_dict()))
        return
    last = steps[-1]
    title = f"{job_id}: {last.state} after {len(steps)} events, attempt {last.attempt}"
    terminal.console().print(timeline.table(title, steps))


@cli.command()
@click.argument("job_id", required=False)
@click.option("--at", "at", default=None, metavar="TIME", help="As of this ISO-8601 instant.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_settings
def status(settings: Settings, job_id: str | None, at: str | None, as_json: bool) -> None:
    """One job's status, or how many jobs are in each state; --at replays the events."""

    until = _instant(at)
    with settings.ledger() as ledger:
        if job_id is None:
            counts = ledger.state_counts(until)
        else:
            job = ledger.status(job_id) if until is None else _status_at(ledger, job_id, until)
    if job_id is None:
        when = "now" if until is None else f"at {until.isoformat()}"
        if as_json:
            click.echo(_as_json(counts))
        else:
            rows: list[list[Any]] = [[state, count] for state, count in counts.items()]
            _table(f"{sum(counts.values())} jobs {when}", ["state", "jobs"], rows)
    elif as_json:
        click.echo(_as_json(job))
    else:
        fields: list[list[Any]] = [[name, value] for name, value in asdict(job).items()]
        _table(f"{job_id}: {job.state}", ["field", "value"], fields)


def _status_at(ledger: Ledger, job_id: str, until: datetime) -> JobStatus:
    found = ledger.replay_job(job_id, until)
    if found is None:
        ledger.status(job_id)  # UnknownJob if it never existed at all
        raise click.ClickException(f"job {job_id!r} did not exist yet at {until.isoformat()}")
    return found


_workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes to spread a large ledger over [default: one per CPU, up to 8].",
)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@_workers_option
@pass_settings
def verify(settings: Settings, as_json: bool, workers: int | None) -> None:
    """Check every hash chain, every lifecycle path and the projection; exit 1 on problems."""
    with signals.sigterm_exits(), settings.ledger() as ledger, _progress_bar() as bar:
        report = ledger.verify(progress=_tracked(bar, "verifying"), workers=workers)
    _report(report, as_json, "verify")


@cli.command()
@_workers_option
@pass_settings
def rebuild(settings: Settings, workers: int | None) -> None:
    """Re-fold the status projection from the events, in one transaction."""
    with signals.sigterm_exits(), settings.ledger() as ledger, _progress_bar() as bar:
        count = ledger.rebuild(progress=_tracked(bar, "rebuilding"), workers=workers)
    click.echo(f"rebuilt the projection: {count} jobs", err=True)


@cli.command()
@click.option("--since", type=int, default=None, metavar="POSITION", help="Only later events.")
@pass_settings
def export(settings: Settings, since: int | None) -> None:
    """Write every event as a JSON line to stdout (e.g. `jobledger export > events.jsonl`)."""
    # UTF-8 whatever the locale says: the hashes cover UTF-8 text.
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
    try:
        with settings.ledger() as ledger:
            count = ledger.export(out, since=since)
        out.flush()
    except BrokenPipeError:  # the reader went away, e.g. `jobledger export | head`
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    finally:
        with contextlib.suppress(ValueError):
            out.detach()  # hand sys.stdout its buffer back
    click.echo(f"exported {count} events", err=True)


@cli.command("verify-export")
@click.argument("path", type=click.File("rb"))  # bytes: a line that is not UTF-8 is a problem
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def verify_export(path: BinaryIO, as_json: bool) -> None:
    """Check an exported file (hashes and chains) without any database; exit 1 on problems."""
    from . import audit  # noqa: PLC0415

    _report(audit.verify_export(path), as_json, "verify-export")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue and state.")
@pass_settings
def queues(settings: Settings, as_json: bool) -> None:
    """Per queue: jobs in each state, and how long runs took (catches up first)."""
    from .catchup import CatchUp, QueueStats  # noqa: PLC0415

    with settings.ledger() as ledger:
        runner = CatchUp(ledger, QueueStats())
        runner.run_once()
        holdup = runner.holdup()
        stats = QueueStats.read(ledger)
    if holdup is not None:  # the figures are true as of the horizon; say what they leave out
        terminal.echo(f"queues: not yet counted: {holdup}", err=True)
    if as_json:
        for stat in stats:
            click.echo(_as_json({**asdict(stat), "mean_run_seconds": stat.mean_run_seconds}))
        return
    rows = [
        [
            s.queue,
            s.state,
            s.jobs,
            s.runs or "",
            "" if s.mean_run_seconds is None else f"{s.mean_run_seconds:.3f}s",
            f"{s.max_run_seconds:.3f}s" if s.runs else "",
        ]
        for s in stats
    ]
    _table("queues", ["queue", "state", "jobs", "runs ended", "mean run", "longest run"], rows)


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected errors become one clear line on stderr and exit status 1."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="jobledger", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LedgerError as exc:
        if debug:
            for line in traceback.format_exc().splitlines():
                terminal.echo(line, err=True)
        terminal.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
