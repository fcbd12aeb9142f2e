"""Event payloads: what may be stored, and the canonical bytes that get hashed.

Payloads are refused *before* anything is written when they would not come
back from the database exactly as given: non-string keys (JSON would quietly
turn ``1`` into ``"1"``), NaN and infinities, NUL characters (PostgreSQL's
JSONB cannot hold them), lone surrogates, anything that is not JSON, and
nesting or integers too large for every reader to handle (:data:`MAX_DEPTH`,
:data:`MAX_INT_DIGITS`). Floats that JSONB would not give back as the same value
are stored in the form it does give back (:func:`stored_float`), so what is
hashed is what comes back.

The canonical encoding is specified in README.md ("Hash chain") so an auditor
can re-check it with another tool; keep the two in step.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .errors import InvalidPayload

JSONValue = Any  # a recursive alias adds noise without catching anything here

#: From this magnitude on every float is an integer, and not every integer is a float.
EXACT_FLOAT_LIMIT = 2.0**53

_encode_string = json.JSONEncoder(ensure_ascii=False).encode
#: A JSON string literal, escaped as Python's ``json`` does with ``ensure_ascii=False``.
canonical_string: Callable[[str], str] = json.encoder.encode_basestring


#: Deepest nesting of arrays and objects a payload may have. Every reader of the
#: ledger (verify, export, JSON decoders in other languages) recurses per level.
MAX_DEPTH = 100
#: Largest integer magnitude, in decimal digits. Python refuses to convert longer
#: ones to and from text by default (``sys.get_int_max_str_digits``), so a longer
#: one could be neither hashed nor read back by a process with default settings.
MAX_INT_DIGITS = 4300
_INT_BOUND = 10**MAX_INT_DIGITS


def json_int(literal: str) -> int:
    """``parse_int`` for ``json.loads`` of a payload: says which limit a long integer breaks."""
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(literal)


def normalize_payload(value: object, where: str = "data") -> JSONValue:
    """Return ``value`` as plain JSON data (tuples become lists) or raise ``InvalidPayload``."""
    return _normalized(value, where, 0)


def _normalized(value: object, where: str, depth: int) -> JSONValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -_INT_BOUND < value < _INT_BOUND:
            raise InvalidPayload(f"{where}: integer has more than {MAX_INT_DIGITS} digits")
        return int(value)  # drops int subclasses such as IntEnum
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{where}: {value!r} is not representable in JSON")
        return stored_float(value)
    if isinstance(value, str):
        _check_string(value, where)
        return str(value)
    if isinstance(value, (Mapping, list, tuple)) and depth == MAX_DEPTH:
        shown = where if len(where) <= 80 else where[:77] + "..."  # the path is long by now
        raise InvalidPayload(f"{shown}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        return {_key(k, where): _normalized(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalized(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise InvalidPayload(f"{where}: {type(value).__name__} is not JSON-serialisable")


def stored_float(value: float) -> float | int:
    """``value`` as both backends give it back: what gets stored and hashed.

    JSON numbers are decimals. PostgreSQL's JSONB keeps the decimal it is sent,
    Python's shortest ``repr``: ``6.02214076e23`` comes back as the integer
    602214076000000000000000, while the float's exact value is
    602214075999999987023872. Below 2**53 the two are the same number; beyond
    it, the float is stored as the integer its decimal denotes, on every
    backend, and ``float()`` of that integer is ``value`` again. JSONB has no
    negative zero, so ``-0.0`` is stored as ``0.0``. The README ("Hash chain")
    documents this rule.
    """
    if -EXACT_FLOAT_LIMIT < value < EXACT_FLOAT_LIMIT:
        return value + 0.0  # also a plain float for a float subclass
    return int(Decimal(repr(value)))


def _key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise InvalidPayload(f"{where}: key {key!r} is not a string")
    _check_string(key, where)
    return str(key)


def _check_string(text: str, where: str) -> None:
    if "\x00" in text:
        raise InvalidPayload(f"{where}: strings may not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPayload(f"{where}: string is not valid Unicode ({exc.reason})") from None


def canonical_json(value: JSONValue) -> str:
    """Deterministic JSON text of ``value``.

    Objects have their keys sorted by code point, no whitespace is emitted,
    strings are escaped as Python's ``json`` module does with
    ``ensure_ascii=False``, integers and integral floats are written as exact
    integers (``2.0`` -> ``2``; PostgreSQL's JSONB does not keep the
    difference) and other floats in their shortest round-trip form.
    """
    # Exact built-in types first: verify and export encode every stored event,
    # and these cover nearly all of them. The general cases below decide the rest.
    kind = type(value)
    if kind is str:
        return canonical_string(value)
    if kind is dict:
        items = sorted(value.items())
        return "{" + ",".join([f"{_object_key(k)}:{canonical_json(v)}" for k, v in items]) + "}"
    if kind is int:
        return str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return canonical_string(value)
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return "{" + ",".join(f"{_object_key(k)}:{canonical_json(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise InvalidPayload(f"{type(value).__name__} is not JSON-serialisable")


def _object_key(key: object) -> str:
    return canonical_string(key) if type(key) is str else _encode_string(key)


def canonical_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, always six fractional digits."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    # Formatting the fields with % is several times faster than strftime, and than
    # isoformat, whose time zone handling costs more than the digits.
    return _CANONICAL_TIME % _time_fields(moment)


_CANONICAL_TIME = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"
_time_fields = operator.attrgetter(
    "year", "month", "day", "hour", "minute", "second", "microsecond"
)
