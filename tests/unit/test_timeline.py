"""The history timeline: attempts, tokens and durations derived by folding."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from jobledger.chain import GENESIS, event_hash
from jobledger.records import Event
from jobledger.timeline import duration, steps, table

START = datetime(2026, 11, 26, 23, 59, 59, tzinfo=timezone.utc)
HOLDER, OTHER = "web-1:42:00c0ffee", "web-2:43:00decade"


def _history(*moves: tuple[str, str | None, Any, float]) -> list[Event]:
    """Events chained as the ledger would chain them; each move is (type, actor, data, +seconds)."""
    result: list[Event] = []
    previous, moment = GENESIS, START
    for version, (kind, actor, data, seconds) in enumerate(moves, start=1):
        moment += timedelta(seconds=seconds)
        digest = event_hash(previous, "job", version, kind, actor, data, moment)
        result.append(Event(version, "job", version, kind, actor, data, moment, previous, digest))
        previous = digest
    return result


HISTORY = _history(
    ("enqueued", None, {"queue": "q", "data": None}, 0),
    ("claimed", HOLDER, {"attempt": 1}, 0.25),
    ("heartbeat", HOLDER, {"progress": None}, 5),
    ("abandoned", None, {"token": 2, "holder": HOLDER, "reason": "gone"}, 30),
    ("rejected", HOLDER, {"attempted": "completed", "token": 2, "current_token": None}, 1),
    ("requeued", None, {"reason": None}, 0.5),
    ("claimed", OTHER, {"attempt": 2}, 90),
    ("completed", OTHER, {"result": None}, 4000),
)


def test_steps_carry_state_attempt_token_and_elapsed_time() -> None:
    timeline = steps(HISTORY)
    assert [s.state for s in timeline] == [
        "enqueued", "claimed", "claimed", "abandoned", "abandoned", "enqueued", "claimed",
        "completed",
    ]  # fmt: skip
    assert [s.attempt for s in timeline] == [0, 1, 1, 1, 1, 1, 2, 2]
    assert [s.token for s in timeline] == [None, 2, 2, 2, 2, None, 7, 7]
    assert timeline[0].elapsed is None
    assert timeline[1].elapsed == timedelta(seconds=0.25)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "+0.250s"),
        (12.04, "+12.0s"),
        (187, "+3m07s"),
        (7500, "+2h05m"),
        (3 * 86400, "+3d00h"),
    ],
)
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert duration(timedelta(seconds=seconds)) == text


def test_the_table_shows_the_date_once_and_again_when_it_changes() -> None:
    view = table("job", steps(HISTORY))
    assert str(view.title) == "job (2026-11-26 UTC)"
    times = [str(cell) for cell in view.columns[0].cells]
    assert times[0] == "23:59:59.000"
    assert times[-1].startswith("11-27 ")
