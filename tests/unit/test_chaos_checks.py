"""The chaos run's detection check on SQLite: a worker SIGSTOPped inside a command.

Such a worker keeps SQLite's write lock until SIGCONT; nobody can append, the
projectors' abandons included, so a dead holder's jobs are abandoned late through
no fault of detection (seen with ``chaos.py --backend sqlite --seed 8``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from chaos_checks import Timeline, by_job, judge

DEAD = "vm:1:dead"
STOPPED = "vm:2:stopped"
BUSY = "vm:3:busy"
KILLED_AT = 100.0


def event(
    job: str, version: int, kind: str, t: float, process: str | None, **data: Any
) -> dict[str, Any]:
    return {
        "job_id": job,
        "version": version,
        "type": kind,
        "t": t,
        "process": process,
        "data": data,
    }


def run(
    *, busy_appends: list[float], stop: tuple[float, float], holds: list[tuple[float, float]]
) -> tuple[list[Any], Timeline]:
    """DEAD claims job-1 then is SIGKILLed; STOPPED is stopped meanwhile; the abandon
    lands at KILLED_AT + 4.5 s, past TTL (2 s) + 2 s."""
    events = [
        event("job-1", 1, "enqueued", 90.0, None),
        event("job-1", 2, "claimed", 99.5, DEAD, attempt=1),
        event(
            "job-1",
            3,
            "abandoned",
            KILLED_AT + 4.5,
            "vm:9:projector",
            token=2,
            holder=DEAD,
            reason="gone",
        ),
        event("job-1", 4, "requeued", KILLED_AT + 4.5, "vm:9:projector"),
        event("job-1", 5, "claimed", KILLED_AT + 5.0, BUSY, attempt=2),
        event("job-1", 6, "completed", KILLED_AT + 5.5, BUSY, token=6),
    ]
    events += [event(f"busy-{n}", 1, "enqueued", t, None) for n, t in enumerate(busy_appends)]
    timeline = Timeline(ttl=2.0, backend="sqlite", max_attempts=3)
    timeline.workers = {DEAD, STOPPED, BUSY}
    timeline.killed[DEAD] = KILLED_AT
    timeline.stops[STOPPED].append(stop)
    timeline.lock_holds = holds
    # Only detection is looked at: the busy jobs' appends are there to be counted.
    verdict = judge(by_job(events), [], timeline, [])
    return [v for v in verdict.violations if v.kind == "slow-detection"], timeline


def test_a_stop_with_no_append_is_a_lock_hold_and_excuses_the_late_abandon() -> None:
    slow, timeline = run(busy_appends=[100.5, 104.3], stop=(100.7, 104.2), holds=[])
    assert timeline.frozen_stops == [(100.7, 104.2)]
    assert slow == []


def test_a_stop_while_others_append_excuses_nothing() -> None:
    slow, timeline = run(busy_appends=[100.5, 101.5, 103.0, 104.3], stop=(100.7, 104.2), holds=[])
    assert timeline.frozen_stops == []
    assert len(slow) == 1


def test_the_harness_own_lock_hold_is_not_taken_for_the_stopped_worker() -> None:
    slow, timeline = run(busy_appends=[100.5, 104.3], stop=(100.7, 104.2), holds=[(100.75, 104.6)])
    assert timeline.frozen_stops == []
    assert slow == []  # excused by the harness's hold itself
