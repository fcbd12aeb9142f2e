"""The records' quick ``__init__`` builds exactly what the dataclass ``__init__`` builds."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import datetime, timezone
from typing import Any

import pytest

from jobledger.decisions import Plan
from jobledger.records import Claim, Event, JobStatus, quick_init

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
RECORDS: list[tuple[type[Any], tuple[Any, ...]]] = [
    (Event, (7, "j", 2, "claimed", "p", {"attempt": 1}, NOW, "0" * 64, "1" * 64)),
    (JobStatus, ("j", "q", "claimed", 2, 1, "p", 2, NOW, NOW, None, None, NOW, None, "1" * 64)),
    (Claim, ("j", 2, 1, "p")),
    (Plan, ("claimed", "p", {"attempt": 1}, None, None)),
]


def _reference(cls: type[Any]) -> type[Any]:
    """The same fields in a plain frozen, slotted dataclass, built by dataclass's __init__."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(f"Plain{cls.__name__}", fields, frozen=True, slots=True)


@pytest.mark.parametrize(("cls", "values"), RECORDS, ids=lambda v: getattr(v, "__name__", ""))
def test_a_record_holds_what_the_dataclass_init_would(
    cls: type[Any], values: tuple[Any, ...]
) -> None:
    plain = _reference(cls)(*values)
    names = [f.name for f in dataclasses.fields(cls)]
    for record in (cls(*values), cls(**dict(zip(names, values, strict=True)))):
        assert dataclasses.astuple(record) == dataclasses.astuple(plain)
        assert pickle.loads(pickle.dumps(record)) == record
        assert dataclasses.replace(record) == record
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, names[0], None)
    with pytest.raises(TypeError):
        cls(*values, unexpected=1)
    with pytest.raises(TypeError):
        cls(*values, None)  # one value too many


def test_defaults_are_kept() -> None:
    assert Plan("claimed") == Plan("claimed", None, None, None, None)


def test_what_it_cannot_copy_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        value: int

    for cls in (WithFactory, Unslotted):
        with pytest.raises(TypeError):
            quick_init(cls)
