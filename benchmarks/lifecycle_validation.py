"""Lifecycle validation: a lookup in the compiled MOVES table against a ``transitions`` trigger.

Every append asks "may this event follow this state, and where does it lead?".
jobledger answers from ``MOVES``, the frozen ``(state, event) -> state`` table
compiled once from the lifecycle's one ``transitions`` Machine. The baseline asks
the Machine itself: one trigger on a model, the way a Machine-per-job design
would (the same lifecycle, built by ``jobledger.lifecycle.build_machine``).
Both are timed with ``timeit`` over the same legal move (a heartbeat on a
claimed job), best of several repeats.
"""

from __future__ import annotations

import timeit

from common import Row, Settings

from jobledger.lifecycle import MOVES, build_machine


class _Job:
    """A bare model for the ``transitions`` Machine."""


def run(settings: Settings) -> list[Row]:
    number, repeat = settings.pick(200_000, 1_000_000), settings.pick(5, 7)
    names = {"moves": MOVES, "key": ("claimed", "heartbeat")}
    ours = min(timeit.repeat("moves.get(key)", number=number, repeat=repeat, globals=names))
    ours /= number

    job = _Job()
    build_machine(job, initial="claimed")
    names = {"trigger": job.heartbeat}  # type: ignore[attr-defined]
    trials = max(number // 50, 1000)
    theirs = min(timeit.repeat("trigger()", number=trials, repeat=repeat, globals=names))
    theirs /= trials
    ours_us, theirs_us = ours * 1e6, theirs * 1e6
    return [
        Row(
            "lifecycle validation (one legal move)",
            ours_us,
            theirs_us,
            "µs",
            "`transitions` trigger on a model",
            "≤ 0.2 µs, ≥ 30x faster",
            higher_is_better=False,
            met=ours_us <= 0.2 and theirs_us / ours_us >= 30,
            note="timeit statements `moves.get(key)` and `trigger()`, best of repeats",
        )
    ]
