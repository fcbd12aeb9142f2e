"""Every LedgerError survives pickling (audit workers send them to their coordinator)."""

from __future__ import annotations

import copy
import importlib
import pickle
import pkgutil
from typing import Any

import pytest

import jobledger
from jobledger import errors
from jobledger.errors import LedgerError

#: Constructor arguments for every error whose ``__init__`` is its own.
EXAMPLES: dict[type[LedgerError], tuple[Any, ...]] = {
    errors.InvalidTransition: ("job-1", "completed", "claimed"),
    errors.UnknownJob: ("job-1",),
    errors.DuplicateJob: ([f"job-{n}" for n in range(7)], 3),
    errors.ConcurrencyConflict: ("job-1", 4, "completed"),
    errors.AlreadyClaimed: ("job-1", "host:12:ab", 2, 1.5),
    errors.StaleClaim: ("job-1", "completed", 1, 2, "claimed", "host:12:ab"),
    errors.CorruptHistory: ("job-1", 3, "hash chain broken"),
    errors.AttemptsExhausted: ("job-1", "host:12:ab", 3, 3),
    errors.RedeliveryFailed: ("job-1", "rq", ConnectionError("refused")),
}


def _every_error_class() -> list[type[LedgerError]]:
    for module in pkgutil.walk_packages(jobledger.__path__, "jobledger."):
        importlib.import_module(module.name)  # errors defined anywhere in the package count
    found: list[type[LedgerError]] = []
    pending = [LedgerError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda cls: cls.__qualname__)


def _example(cls: type[LedgerError]) -> LedgerError:
    if cls in EXAMPLES:
        return cls(*EXAMPLES[cls])
    assert "__init__" not in vars(cls), f"add constructor arguments for {cls.__name__} to EXAMPLES"
    return cls(f"something {cls.__name__} says")


@pytest.mark.parametrize("cls", _every_error_class(), ids=lambda cls: cls.__name__)
def test_every_error_pickles_equal(cls: type[LedgerError]) -> None:
    error = _example(cls)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copied = pickle.loads(pickle.dumps(error, protocol))
        assert type(copied) is cls
        assert copied == error
        assert hash(copied) == hash(error)
        assert copied.args == error.args
        assert vars(copied) == vars(error)
        assert str(copied) == str(error)
    assert copy.deepcopy(error) == error


def test_the_committed_count_survives_pickling() -> None:
    error = errors.DatabaseUnavailable("connection refused")
    error.committed = 2000  # set by enqueue_many on the error that stopped it
    copied = pickle.loads(pickle.dumps(error))
    assert copied.committed == 2000
    assert str(copied) == str(error)
    assert "2000 jobs of earlier batches were enqueued" in str(copied)


def test_errors_compare_by_value() -> None:
    claimed = errors.AlreadyClaimed("job-1", "host:12:ab", 2)
    assert claimed == errors.AlreadyClaimed("job-1", "host:12:ab", 2)
    assert claimed != errors.AlreadyClaimed("job-1", "host:12:ab", 3)
    assert errors.UnknownJob("job-1") != errors.InvalidJobId("job 'job-1' does not exist")
    assert claimed != "job 'job-1' is already claimed by host:12:ab (token 2)"
