"""Option values checked at the command line: durations, per-queue settings, times, JSON.

A bad value is a usage error (exit status 2) naming the option, before any
database is opened.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from .. import bounds
from ..anchor import Head
from ..encoding import json_int
from ..errors import ConfigurationError, InvalidHead


class Seconds(click.types.FloatParamType):
    """A duration option: finite, above zero (or zero), at most a year (``bounds.seconds``).

    Click's own ``FloatRange`` lets ``nan`` and ``inf`` through, which then
    break a projector only at its first orphan.
    """

    name = "seconds"

    def __init__(self, zero: bool = False) -> None:
        self.zero = zero

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        try:
            return bounds.seconds(number, "the value", zero=self.zero)
        except ConfigurationError as exc:
            self.fail(str(exc), param, ctx)


if TYPE_CHECKING:  # click >= 8.4 types a parameter type by what it converts to
    _PerQueueBase = click.ParamType[tuple[str, Any]]
else:
    _PerQueueBase = click.ParamType


class PerQueue(_PerQueueBase):
    """A ``QUEUE=VALUE`` option, the value converted and checked by ``value_type``."""

    name = "queue=value"

    def __init__(self, value_type: click.ParamType[Any]) -> None:
        self.value_type = value_type

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        if isinstance(value, tuple):  # already converted
            return value
        queue, sep, raw = str(value).partition("=")
        if not sep or not queue:
            self.fail(f"expected QUEUE=VALUE, got {value!r}", param, ctx)
        try:
            return queue, self.value_type.convert(raw, param, ctx)
        except click.BadParameter as exc:
            self.fail(f"{value!r}: {exc.message}", param, ctx)


def payload(text: str) -> Any:
    """The JSON of ``--data``, integers kept exact (``encoding.json_int``)."""
    try:
        return json.loads(text, parse_int=json_int)
    except json.JSONDecodeError as exc:
        reason = f"not JSON: {exc}"
    except (ValueError, RecursionError) as exc:  # too long an integer, too deep a nesting
        reason = str(exc)
    raise click.BadParameter(reason, param_hint="--data")


def instant(value: str | None, option: str = "--at") -> datetime | None:
    """An ISO-8601 instant (``Z`` or an offset; UTC if neither) for ``--at`` (or ``option``)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 time (e.g. 2026-11-26T12:00:00Z)", param_hint=option
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


if TYPE_CHECKING:
    _HeadBase = click.ParamType[Head]
else:
    _HeadBase = click.ParamType


class AnchorHead(_HeadBase):
    """A published anchor head, ``SEQ:DIGEST`` as ``jobledger head`` prints it."""

    name = "head"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Head:
        if isinstance(value, Head):
            return value
        try:
            return Head.parse(str(value))
        except InvalidHead as exc:
            self.fail(str(exc), param, ctx)
