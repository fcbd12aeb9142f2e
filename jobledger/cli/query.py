"""Read-only commands: ``jobs``, ``status``, ``history``, ``processes`` and ``queues``.

Each opens the ledger, reads, closes it, then prints a table (or JSON lines
with ``--json``); nothing here writes an event.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from .. import terminal, timeline
from ..lifecycle import State
from ..liveness.base import first_live
from ..records import JobStatus
from . import output, params
from .settings import Settings, pass_settings

if TYPE_CHECKING:
    from ..ledger import Ledger

#: Live identities per read of their claims: one IN list of this many.
_HOLDERS_PER_READ = 1000

_LIMIT = click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many (0: all).",
)


@click.command()
@click.option(
    "--state", type=click.Choice([state.value for state in State]), help="Only jobs in this state."
)
@click.option("--queue", default=None, help="Only jobs of this queue.")
@_LIMIT
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
            click.echo(output.to_json(status))
        return
    rows = [
        [
            s.job_id,
            s.queue,
            s.state,
            s.attempt,
            s.claimed_by,
            output.ago(s.updated_at),
            s.last_error,
        ]
        for s in found
    ]
    columns = ["job", "queue", "state", "attempt", "held by", "changed", "last error"]
    output.table(f"{len(found)} jobs", columns, rows)


@click.command()
@click.argument("job_id", required=False)
@click.option("--at", "at", default=None, metavar="TIME", help="As of this ISO-8601 instant.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_settings
def status(settings: Settings, job_id: str | None, at: str | None, as_json: bool) -> None:
    """One job's status, or how many jobs are in each state; --at replays the events."""

    until = params.instant(at)
    with settings.ledger() as ledger:
        if job_id is None:
            counts = ledger.state_counts(until)
        else:
            job = ledger.status(job_id) if until is None else _status_at(ledger, job_id, until)
    if job_id is None:
        when = "now" if until is None else f"at {until.isoformat()}"
        if as_json:
            click.echo(output.to_json(counts))
        else:
            rows: list[list[Any]] = [[state, count] for state, count in counts.items()]
            output.table(f"{sum(counts.values())} jobs {when}", ["state", "jobs"], rows)
    elif as_json:
        click.echo(output.to_json(job))
    else:
        fields: list[list[Any]] = [[name, value] for name, value in asdict(job).items()]
        output.table(f"{job_id}: {job.state}", ["field", "value"], fields)


def _status_at(ledger: Ledger, job_id: str, until: datetime) -> JobStatus:
    found = ledger.replay_job(job_id, until)
    if found is None:
        ledger.status(job_id)  # UnknownJob if it never existed at all
        raise click.ClickException(f"job {job_id!r} did not exist yet at {until.isoformat()}")
    return found


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@pass_settings
def history(settings: Settings, job_id: str, as_json: bool) -> None:
    """A job's timeline: time, event, actor, attempt, token, data, and time between steps."""
    with settings.ledger() as ledger:
        steps = timeline.steps(ledger.history(job_id))
    if as_json:
        for step in steps:
            click.echo(output.to_json(step.as_dict()))
        return
    last = steps[-1]
    title = f"{job_id}: {last.state} after {len(steps)} events, attempt {last.attempt}"
    terminal.console().print(timeline.table(title, steps))


@click.command()
@_LIMIT
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_settings
def processes(settings: Settings, limit: int, as_json: bool) -> None:
    """Live processes by identity: age, quiet flag, busy count and the jobs they hold."""
    with settings.ledger() as ledger:
        liveness = settings.liveness(ledger)
        try:
            shown, live = first_live(liveness, limit or None)  # --limit 0: all
            counts = ledger.claims_per_holder()
            held = _held_jobs(ledger, [p.identity for p in shown if p.identity in counts])
            alive = liveness.alive(list(counts))
            orphaned = [holder for holder in counts if not alive[holder]]
        finally:
            liveness.close()
    if len(shown) < live:
        title = f"The first {len(shown)} of {live} live processes, by identity (--limit 0: all)"
    else:
        title = f"{live} live processes"
    if as_json:
        for info in shown:
            click.echo(output.to_json({**asdict(info), "held": held.get(info.identity, [])}))
        if len(shown) < live:
            click.echo(title, err=True)
        return
    rows = [
        [
            p.identity,
            output.ago(p.started_at),
            "yes" if p.quiet else "",
            p.busy,
            ", ".join(held.get(p.identity, [])[:5])
            + (" …" if len(held.get(p.identity, [])) > 5 else ""),
        ]
        for p in shown
    ]
    output.table(title, ["identity", "age", "quiet", "busy", "holds"], rows)
    if orphaned:
        count = sum(counts[h] for h in orphaned)
        jobs_are = "1 claimed job is" if count == 1 else f"{count} claimed jobs are"
        holders = "1 process" if len(orphaned) == 1 else f"{len(orphaned)} processes"
        click.echo(
            f"{jobs_are} held by {holders} that {'is' if len(orphaned) == 1 else 'are'} not alive"
        )


def _held_jobs(ledger: Ledger, holders: list[str]) -> dict[str, list[str]]:
    """The ids of the jobs each of ``holders`` has claimed, in id order.

    Only the listed holders' claims are read, through the holder index, a bounded IN list
    at a time: the claims of the others (perhaps a million after an outage) are only counted.
    """
    held: dict[str, list[str]] = {}
    for start in range(0, len(holders), _HOLDERS_PER_READ):
        held.update(ledger.held_job_ids(holders[start : start + _HOLDERS_PER_READ]))
    return held


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue and state.")
@pass_settings
def queues(settings: Settings, as_json: bool) -> None:
    """Per queue: jobs in each state, and how long runs took (catches up first)."""
    from ..catchup import CatchUp, QueueStats  # noqa: PLC0415

    with settings.ledger() as ledger:
        runner = CatchUp(ledger, QueueStats())
        runner.run_once()
        holdup = runner.holdup()
        stats = QueueStats.read(ledger)
    if holdup is not None:  # the figures are true as of the horizon; say what they leave out
        terminal.echo(f"queues: not yet counted: {holdup}", err=True)
    if as_json:
        for stat in stats:
            click.echo(output.to_json({**asdict(stat), "mean_run_seconds": stat.mean_run_seconds}))
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
    output.table(
        "queues", ["queue", "state", "jobs", "runs ended", "mean run", "longest run"], rows
    )
