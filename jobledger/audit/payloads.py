"""Stored payload texts, decoded and canonically encoded once per distinct text.

verify, rebuild and export read every event's payload as JSON text; most texts
repeat, and decoding and re-encoding them cost more than hashing the event
(see ``benchmarks/README.md``). The canonical encoding itself is
:func:`jobledger.encoding.canonical_json`; everything here gives the same text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..encoding import JSONValue, canonical_json, canonical_string


class JsonStrings(dict[str, str]):
    """``strings[text]``: ``text`` as a JSON string literal, remembered.

    Event types and processes repeat; at most ``size`` literals are kept.
    """

    def __init__(self, size: int = 4096) -> None:
        super().__init__()
        self._size = size

    def __missing__(self, text: str) -> str:
        if len(self) >= self._size:
            self.clear()
        literal = self[text] = canonical_string(text)
        return literal


class StoredPayloads:
    """Stored payload texts decoded, and canonically encoded, once per distinct text.

    Most texts repeat (``{"attempt": 1}``, ``{"progress": null}``). Each answer
    depends on the text alone, so serving a repeat from the cache can never change a hash. Only
    texts of up to ``longest`` characters are kept (short payloads are the ones
    that repeat), and the cache starts over when it holds ``size`` of them, so
    its memory stays bounded. Callers must not modify the values handed out:
    repeats share them.

    Text that is not JSON (only an edit behind the ledger's back stores it) is
    taken as a JSON string: it then fails its hash check instead of stopping the
    caller.
    """

    def __init__(self, size: int = 4096, longest: int = 256) -> None:
        self._size, self._longest = size, longest
        self._values: dict[str, JSONValue] = {}
        self._encoded: dict[str, tuple[str, JSONValue]] = {}
        self._saw_float = False
        decoder = json.JSONDecoder(parse_float=self._float, parse_constant=self._float)
        self._decode = decoder.decode
        # raw_decode without its Python wrapper: the C scanner, which reads one value
        # from where it is told. Stored JSON has no whitespace around the value; any
        # text it does not read to the end goes through decode() after all.
        self._scan: Callable[[str, int], tuple[JSONValue, int]] = getattr(
            decoder, "scan_once", decoder.raw_decode
        )

    def value(self, text: str) -> JSONValue:
        """The payload stored as ``text``."""
        try:
            return self._values[text]
        except KeyError:
            pass
        value = self._decoded(text)
        self._remember(self._values, text, value)
        return value

    def encoded(self, text: str) -> tuple[str, JSONValue]:
        """``(canonical_json(value), value)`` of the payload stored as ``text``."""
        try:
            return self._encoded[text]
        except KeyError:
            pass
        self._saw_float = False
        value = self._decoded(text)
        # Decoded JSON holds only dict, list, str, int, bool and None, which the C
        # encoder writes exactly as canonical_json does, unless there are floats
        # (canonical_json writes 2.0 as 2): those take the reference encoder.
        if self._saw_float or not isinstance(value, (dict, list)):
            result = canonical_json(value), value
        else:
            result = _encode_sorted(value), value
        self._remember(self._encoded, text, result)
        return result

    def _decoded(self, text: str) -> JSONValue:
        try:
            value, end = self._scan(text, 0)
            if end == len(text):
                return value
        except (StopIteration, ValueError):
            pass
        except TypeError:  # not text at all (SQLite stores what it is given): fails its hash
            return repr(text)
        try:
            return self._decode(text)
        except ValueError:
            return text

    def _remember(self, cache: dict[str, Any], text: str, result: Any) -> None:
        if len(text) <= self._longest:
            if len(cache) >= self._size:
                cache.clear()
            cache[text] = result

    def _float(self, literal: str) -> float:  # also NaN, Infinity, -Infinity
        self._saw_float = True
        return float(literal)


def _sorted_encoder() -> Callable[[JSONValue], str]:
    """JSON with sorted keys and no whitespace, for decoded JSON without floats.

    ``JSONEncoder.encode`` builds a new C encoder on every call; this one is made
    once, and used only if it writes a probe value exactly as ``JSONEncoder`` does.
    """
    standard = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:
        return standard

    def unencodable(value: object) -> None:
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    try:
        # (markers, default, encoder, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan)
        encoder = make_encoder(
            None, unencodable, canonical_string, None, ":", ",", True, False, True
        )
        probe = {"b": [1, None, True, "\u00e9\n"], "a": {"z": -12, "y": False}}

        def fast(value: JSONValue) -> str:
            return "".join(encoder(value, 0))

        if fast(probe) == standard(probe):
            return fast
    except Exception:  # a C encoder of another signature: the standard one will do
        pass
    return standard


_encode_sorted = _sorted_encoder()
