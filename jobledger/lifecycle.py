"""The job lifecycle, defined once.

The one ``transitions`` Machine below is the only statement of which moves are
legal. It is built once, with no model, and compiled at import into a frozen
``(state, event) -> state`` table: appends and replay look moves up in that
table instead of running a Machine per job (cost: see benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType
from typing import Any

from transitions import Machine


class State(str, Enum):
    """Where a job is in its life."""

    ENQUEUED = "enqueued"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class EventType(str, Enum):
    """What can be appended to a job's history."""

    ENQUEUED = "enqueued"
    CLAIMED = "claimed"
    HEARTBEAT = "heartbeat"
    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"
    ABANDONED = "abandoned"
    REQUEUED = "requeued"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value


#: Pseudo-state of a job that has no events yet; never stored.
NEW = "new"

_ALL_STATES = [s.value for s in State]

#: The lifecycle, in the form ``transitions`` takes. ``dest=None`` is an
#: internal transition: the event is recorded, the state does not move.
TRANSITIONS: tuple[dict[str, Any], ...] = (
    {"trigger": EventType.ENQUEUED.value, "source": NEW, "dest": State.ENQUEUED.value},
    {
        "trigger": EventType.CLAIMED.value,
        "source": State.ENQUEUED.value,
        "dest": State.CLAIMED.value,
    },
    {
        "trigger": EventType.HEARTBEAT.value,
        "source": State.CLAIMED.value,
        "dest": State.CLAIMED.value,
    },
    {
        "trigger": EventType.COMPLETED.value,
        "source": State.CLAIMED.value,
        "dest": State.COMPLETED.value,
    },
    {"trigger": EventType.FAILED.value, "source": State.CLAIMED.value, "dest": State.FAILED.value},
    {
        "trigger": EventType.RELEASED.value,
        "source": State.CLAIMED.value,
        "dest": State.ENQUEUED.value,
    },
    {
        "trigger": EventType.ABANDONED.value,
        "source": State.CLAIMED.value,
        "dest": State.ABANDONED.value,
    },
    {
        "trigger": EventType.REQUEUED.value,
        "source": [State.ABANDONED.value, State.FAILED.value],
        "dest": State.ENQUEUED.value,
    },
    {
        "trigger": EventType.CANCELLED.value,
        "source": State.ENQUEUED.value,
        "dest": State.CANCELLED.value,
    },
    {"trigger": EventType.REJECTED.value, "source": _ALL_STATES, "dest": None},
)


def build_machine(model: object | None = None, initial: str = NEW) -> Machine:
    """The lifecycle as a ``transitions`` Machine (for compiling, diagrams and tests)."""
    return Machine(
        model=model,
        states=[NEW, *_ALL_STATES],
        transitions=[dict(t) for t in TRANSITIONS],
        initial=initial,
        auto_transitions=False,
        send_event=False,
    )


def _compile(machine: Machine) -> Mapping[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for event_name, event in machine.events.items():
        for source, transitions in event.transitions.items():
            (transition,) = transitions  # one unconditional move per (source, event)
            table[(source, event_name)] = transition.dest or source
    return MappingProxyType(table)


#: ``(state, event) -> next state`` for every legal move; absent pairs are illegal.
MOVES: Mapping[tuple[str, str], str] = _compile(build_machine())

#: States a job never leaves without an operator (or the recovery policy).
TERMINAL_STATES = frozenset({State.COMPLETED.value, State.CANCELLED.value})


def next_state(state: str, event: str) -> str | None:
    """The state after ``event`` from ``state``, or ``None`` if the move is illegal."""
    return MOVES.get((state, event))


def mermaid() -> str:
    """The lifecycle as a Mermaid state diagram, derived from the compiled table.

    README.md embeds it; ``tests/unit/test_lifecycle.py`` fails when the two differ.
    ``rejected`` (legal from every state, moves nothing) is noted, not drawn.
    """
    lines = ["stateDiagram-v2"]
    for (source, event), dest in sorted(MOVES.items(), key=lambda item: _order(item[0])):
        if event != EventType.REJECTED.value:
            lines.append(f"    {'[*]' if source == NEW else source} --> {dest}: {event}")
    lines += [f"    {state.value} --> [*]" for state in State if state.value in TERMINAL_STATES]
    lines.append(
        "    note right of claimed: rejected (a refused stale write) is legal in every state"
    )
    return "\n".join(lines)


def _order(key: tuple[str, str]) -> tuple[int, int]:
    states = [NEW, *(s.value for s in State)]
    events = [e.value for e in EventType]
    return states.index(key[0]), events.index(key[1])
