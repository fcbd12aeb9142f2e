"""Job ids and queue names: which new ones are accepted, and which can be looked up.

A new name must be text a person can read back and type: non-empty, at most
:data:`MAX_NAME_LENGTH` characters (the columns that hold them), no leading or
trailing whitespace (``"job-1 "`` and ``"job-1"`` would look the same in every
listing), and none of these characters: controls (Unicode category Cc: tabs,
newlines, escape sequences), format characters (Cf: bidi overrides, zero-width
characters), line and paragraph separators (Zl, Zp) and lone surrogates (Cs,
which are not valid UTF-8). README.md ("Job ids and queue names") says the same.

Names stored before this rule existed stay readable: looking a job up only
refuses what no database can hold (not text, NUL, lone surrogates), since such
a job cannot exist.
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidJobId

#: Job ids and queue names fit the columns that hold them (``schema.py`` sizes them so).
MAX_NAME_LENGTH = 255
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a lone surrogate (not valid UTF-8)",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def checked_new(value: object, what: str = "job id") -> str:
    """``value``, if it may name a new job (or queue); ``InvalidJobId`` saying why not."""
    text = _text(value, what)
    if not text:
        raise InvalidJobId(f"{what} must not be empty")
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidJobId(
            f"{what} must be at most {MAX_NAME_LENGTH} characters, not {len(text)}: {text!r}"
        )
    if not (text.isascii() and text.isprintable()):  # printable ASCII needs no closer look
        for position, char in enumerate(text):
            refused = _REFUSED_CATEGORIES.get(unicodedata.category(char))
            if refused is not None:
                raise InvalidJobId(
                    f"{what} {text!r} contains {refused} (U+{ord(char):04X} at position {position})"
                )
    if text.strip() != text:
        raise InvalidJobId(f"{what} {text!r} has leading or trailing whitespace")
    return text


def checked_lookup(value: object, what: str = "job id") -> str:
    """``value``, if a stored job (or queue) could have it as its name; else ``InvalidJobId``."""
    text = _text(value, what)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJobId(
                f"{what} {text!r} is not valid UTF-8 (it contains a lone surrogate)"
            ) from None
    if "\x00" in text:
        raise InvalidJobId(f"{what} {text!r} contains a NUL character")
    return text


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidJobId(f"{what} must be a string, not {type(value).__name__}: {value!r}")
    return str(value)  # a plain str, not a subclass with its own behaviour
