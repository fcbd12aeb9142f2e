"""Stored payload texts, decoded and canonically encoded once per distinct text.

verify, rebuild and export read every event's payload as JSON text; most texts
repeat, and decoding and re-encoding them cost more than hashing the event
(see ``benchmarks/README.md``). The canonical encoding itself is
:func:`jobledger.encoding.canonical_json`; everything here gives the same text.
With msgspec installed (the ``speedups`` extra) payloads without floats go through
msgspec, the rest through ``json``: same values, same texts (the tests compare them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..encoding import JSONValue, canonical_json, canonical_string

try:  # the `speedups` extra: reads and writes payloads several times faster than json
    import msgspec
except ImportError:  # pragma: no cover (the test extra installs it)
    msgspec = None  # type: ignore[assignment]

#: Whether :class:`StoredPayloads` uses msgspec by default (it gives the same texts).
FAST_JSON = msgspec is not None


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

    def __init__(self, size: int = 4096, longest: int = 256, fast: bool = FAST_JSON) -> None:
        self._size, self._longest = size, longest
        self._fast_decode: Callable[[str], JSONValue] | None = None
        self._fast_encode: Callable[[JSONValue], bytes] | None = None
        if fast and msgspec is not None:
            self._fast_decode = msgspec.json.Decoder(float_hook=_refuse_float).decode
            self._fast_encode = msgspec.json.Encoder(order="sorted").encode
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
        value = self._fast_decoded(text) if self._fast_decode else _UNREAD
        if value is _UNREAD:
            value = self._decoded(text)
        self._remember(self._values, text, value)
        return value

    def encoded(self, text: str) -> tuple[str, JSONValue]:
        """``(canonical_json(value), value)`` of the payload stored as ``text``."""
        try:
            return self._encoded[text]
        except KeyError:
            pass
        result = self._fast_encoded(text) if self._fast_encode else None
        if result is not None:
            self._remember(self._encoded, text, result)
            return result
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

    def _fast_decoded(self, text: str) -> JSONValue:
        """msgspec's reading of ``text``, or ``_UNREAD`` where ``json`` must decide.

        That is text with a float (json reads floats with ``float()``, and
        canonical_json writes ``2.0`` as ``2``), text that is not JSON (NaN, a lone
        surrogate, an integer past Python's digit limit...) and anything not a str
        (msgspec reads bytes, which SQLite may hand over: they must fail their hash
        as before).
        """
        if type(text) is not str:
            return _UNREAD
        try:
            return self._fast_decode(text)  # type: ignore[misc]
        except (msgspec.MsgspecError, RecursionError):
            return _UNREAD

    def _fast_encoded(self, text: str) -> tuple[str, JSONValue] | None:
        """:meth:`encoded` by msgspec, for an object or array without floats.

        msgspec writes such a value (keys sorted by code point, strings escaped as
        ``json`` escapes them with ``ensure_ascii=False``) exactly as canonical_json
        does: the tests compare the two on arbitrary JSON.
        """
        value = self._fast_decoded(text)
        if not isinstance(value, (dict, list)):
            return None
        try:
            return self._fast_encode(value).decode(), value  # type: ignore[misc]
        except (msgspec.MsgspecError, RecursionError):
            return None

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


#: What :meth:`StoredPayloads._fast_decoded` returns for a text it leaves to ``json``.
_UNREAD: Any = object()


def _refuse_float(literal: str) -> float:
    """msgspec's ``float_hook``: a float sends the whole text to ``json``."""
    raise ValueError(f"{literal} is a float")


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
