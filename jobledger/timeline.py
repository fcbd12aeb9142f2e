"""A job's history as a timeline: each step with the attempt and claim it belongs to.

The attempt and token of a step come from folding the history with
:func:`jobledger.projection.advance`, so the timeline says exactly what the
projection says after each event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import terminal
from .encoding import canonical_json, canonical_time
from .lifecycle import EventType
from .projection import Draft, advance
from .records import Event

if TYPE_CHECKING:
    from rich.table import Table


@dataclass(frozen=True, slots=True)
class Step:
    """One event of a timeline."""

    event: Event
    state: str  # the job's state after the event
    attempt: int  # claims so far
    token: int | None  # the claim this event belongs to, if any
    elapsed: timedelta | None  # since the previous event

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, times in the canonical UTC form."""
        event = self.event
        return {
            "position": event.position,
            "job_id": event.job_id,
            "version": event.version,
            "type": event.type,
            "process": event.process,
            "data": event.data,
            "recorded_at": canonical_time(event.recorded_at),
            "state": self.state,
            "attempt": self.attempt,
            "token": self.token,
            "elapsed_seconds": None if self.elapsed is None else self.elapsed.total_seconds(),
            "hash": event.hash,
        }


def steps(history: Iterable[Event]) -> list[Step]:
    """The timeline of one job's events, oldest first (``CorruptHistory`` if they do not fold)."""
    result: list[Step] = []
    draft: Draft | None = None
    previous: Event | None = None
    for event in history:
        token_before = draft.claim_token if draft is not None else None
        draft = advance(draft, event)
        result.append(
            Step(
                event=event,
                state=draft.state,
                attempt=draft.attempt,
                token=_token(event, token_before),
                elapsed=event.recorded_at - previous.recorded_at if previous else None,
            )
        )
        previous = event
    return result


def _token(event: Event, held_before: int | None) -> int | None:
    """The claim an event is about: its own for a claim, the presented one for a refusal."""
    if event.type == EventType.CLAIMED:
        return event.version
    if event.type in (EventType.ABANDONED, EventType.REJECTED) and isinstance(event.data, dict):
        token = event.data.get("token")
        return token if isinstance(token, int) else held_before
    return held_before


def duration(elapsed: timedelta | None) -> str:
    """``+0.250s``, ``+12.0s``, ``+3m07s``, ``+2h05m``, ``+3d04h`` (empty for the first step)."""
    if elapsed is None:
        return ""
    seconds = elapsed.total_seconds()
    if seconds < 10:
        return f"+{seconds:.3f}s"
    if seconds < 60:
        return f"+{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"+{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"+{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"+{days}d{hours:02d}h"


def table(title: str, timeline: Sequence[Step]) -> Table:
    """A rich table: time, time since the previous step, event, actor, attempt, token, data.

    Every cell and the title are plain text (see :mod:`jobledger.terminal`).

    Times are UTC; the title carries the first event's date and later rows show
    their date only when it differs, so the table fits a narrow terminal.
    """
    from rich.box import SIMPLE_HEAD  # noqa: PLC0415 (Rich loads only for output that uses it)
    from rich.table import Table  # noqa: PLC0415

    first_day = timeline[0].event.recorded_at.date() if timeline else None
    shown_title = f"{title} ({first_day} UTC)" if first_day else title
    view = Table(title=terminal.text(shown_title), box=SIMPLE_HEAD)
    view.add_column("time", no_wrap=True)
    view.add_column("after", justify="right", no_wrap=True)
    view.add_column("event", no_wrap=True)
    view.add_column("actor", overflow="fold")
    view.add_column("attempt", justify="right", no_wrap=True)
    view.add_column("token", justify="right", no_wrap=True)
    view.add_column("data", overflow="fold")
    for step in timeline:
        moment = step.event.recorded_at
        shown = "%H:%M:%S.%f" if moment.date() == first_day else "%m-%d %H:%M:%S.%f"
        cells = (
            moment.strftime(shown)[:-3],
            duration(step.elapsed),
            step.event.type,
            step.event.process or "",
            str(step.attempt) if step.attempt else "",
            "" if step.token is None else str(step.token),
            canonical_json(step.event.data),
        )
        view.add_row(*(terminal.text(cell) for cell in cells))
    return view
