"""Rules that need I/O, written once and run by a sync or an async caller.

A rule that calls the ledger or the liveness backend is a generator that
*yields* each call it needs as a :class:`Call` and is sent the call's result,
or has the call's exception thrown in at the ``yield``. :func:`drive` makes the
calls directly and :func:`drive_async` awaits them, so :class:`jobledger.Worker`
and :class:`jobledger.aio.AsyncWorker` follow one definition of each rule
(:mod:`jobledger.claiming`, :mod:`jobledger.takeover`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")

#: A rule: yields the calls it needs, returns its outcome.
Steps = Generator["Call", Any, _T]


@dataclass(frozen=True, slots=True)
class Call:
    """``target.method(*args, **kwargs)``, where ``target`` names an object the driver holds."""

    target: str  # "ledger" or "liveness"
    method: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


def ledger(method: str, *args: Any, **kwargs: Any) -> Call:
    """A call of the ledger's ``method``."""
    return Call("ledger", method, args, tuple(kwargs.items()))


def liveness(method: str, *args: Any, **kwargs: Any) -> Call:
    """A call of the liveness backend's ``method``."""
    return Call("liveness", method, args, tuple(kwargs.items()))


def drive(steps: Steps[_T], **targets: Any) -> _T:
    """Run ``steps``, making each call on ``targets`` (``ledger=``, ``liveness=``) directly."""
    try:
        call = next(steps)
        while True:
            try:
                result = getattr(targets[call.target], call.method)(*call.args, **dict(call.kwargs))
            except BaseException as exc:  # the rule sees it where it made the call
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as done:
        outcome: _T = done.value
        return outcome


async def drive_async(steps: Steps[_T], **targets: Any) -> _T:
    """:func:`drive` for coroutine methods: each call is awaited."""
    try:
        call = next(steps)
        while True:
            try:
                method = getattr(targets[call.target], call.method)
                result = await method(*call.args, **dict(call.kwargs))
            except BaseException as exc:  # cancellation too: the rule's finally blocks run
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as done:
        outcome: _T = done.value
        return outcome
