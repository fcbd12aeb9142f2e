"""A job's timeline drawn as SVG: one mark per event, in order, coloured by event type.

Marks are evenly spaced (a heartbeat storm and a week-long wait both stay
readable); the time since the previous event is written under each mark. The
drawing is plain numbers and the event types; every text is escaped by the
template that draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..timeline import Step, duration

#: Horizontal room per event, and the margin at each end, in SVG units.
SPACING = 110
MARGIN = 50
#: Events drawn; a longer history shows its first and last ones around a gap.
MAX_MARKS = 40


@dataclass(frozen=True)
class Mark:
    x: int
    version: int
    type: str
    elapsed: str
    state: str
    gap_before: bool = False  # events left out before this one


@dataclass(frozen=True)
class Drawing:
    width: int
    marks: list[Mark]
    hidden: int  # events not drawn


def drawing(steps: Sequence[Step]) -> Drawing:
    """Where each mark goes; the middle of a long history is left out (and counted)."""
    shown = list(steps)
    hidden = 0
    cut = -1
    if len(shown) > MAX_MARKS:
        half = MAX_MARKS // 2
        hidden = len(shown) - MAX_MARKS
        shown = shown[:half] + shown[-half:]
        cut = half
    marks = [
        Mark(
            x=MARGIN + index * SPACING,
            version=step.event.version,
            type=step.event.type,
            elapsed=duration(step.elapsed),
            state=step.state,
            gap_before=index == cut,
        )
        for index, step in enumerate(shown)
    ]
    width = 2 * MARGIN + max(0, len(marks) - 1) * SPACING
    return Drawing(width=width, marks=marks, hidden=hidden)
