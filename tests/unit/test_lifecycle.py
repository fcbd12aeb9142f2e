from __future__ import annotations

from pathlib import Path

import pytest
from transitions import MachineError

from jobledger.lifecycle import MOVES, NEW, EventType, State, build_machine, mermaid, next_state

ALL_STATES = [NEW, *(s.value for s in State)]
ALL_EVENTS = [e.value for e in EventType]


class Probe:
    """A model for one throw-away Machine per pair: fine in a test, never in the ledger."""

    state: str


@pytest.mark.parametrize("state", ALL_STATES)
@pytest.mark.parametrize("event", ALL_EVENTS)
def test_compiled_table_agrees_with_the_machine(state: str, event: str) -> None:
    probe = Probe()
    build_machine(model=probe, initial=state)
    try:
        probe.trigger(event)  # type: ignore[attr-defined]
    except MachineError:
        expected = None
    else:
        expected = probe.state
    assert next_state(state, event) == expected


def test_table_is_the_design_table() -> None:
    # DESIGN.md, "Lifecycle": from -> to for every event; rejected leaves the state alone.
    design = {
        ("new", "enqueued"): "enqueued",
        ("enqueued", "claimed"): "claimed",
        ("claimed", "heartbeat"): "claimed",
        ("claimed", "completed"): "completed",
        ("claimed", "failed"): "failed",
        ("claimed", "released"): "enqueued",
        ("claimed", "abandoned"): "abandoned",
        ("abandoned", "requeued"): "enqueued",
        ("failed", "requeued"): "enqueued",
        ("enqueued", "cancelled"): "cancelled",
        **{(s.value, "rejected"): s.value for s in State},
    }
    assert dict(MOVES) == design


def test_table_is_frozen() -> None:
    with pytest.raises(TypeError):
        MOVES[("completed", "claimed")] = "claimed"  # type: ignore[index]


def test_states_and_events_are_plain_strings() -> None:
    assert State.CLAIMED == "claimed"
    assert str(EventType.HEARTBEAT) == "heartbeat"
    assert f"{State.FAILED}" == "failed"


def test_readme_diagram_is_up_to_date() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = f"```mermaid\n{mermaid()}\n```"
    assert block in readme, (
        "README.md's lifecycle diagram is out of date; replace it with the output of\n"
        "  python -c 'from jobledger.lifecycle import mermaid; print(mermaid())'"
    )
