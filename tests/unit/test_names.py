"""The rule for new job ids and queue names, and the looser one for looking them up."""

from __future__ import annotations

import pytest

from jobledger import names
from jobledger.errors import InvalidJobId

REFUSED = {
    "empty": "",
    "only spaces": "   ",
    "only a tab": "\t",
    "a tab inside": "job\t1",
    "a newline": "job\n1",
    "a carriage return": "job-1\r",
    "an escape sequence": "job\x1b[2J",
    "DEL": "job\x7f",
    "a C1 control": "job\x85",
    "NUL": "job\x00",
    "a line separator": "job\u20281",
    "a paragraph separator": "job\u20291",
    "a bidi override": "job\u202e1-boj",
    "a bidi isolate": "job\u2066x\u2069",
    "a zero-width space": "job\u200b1",
    "a byte order mark": "\ufeffjob",
    "a lone surrogate (undecodable argv)": "bad\udcffid",
    "a leading space": " job-1",
    "a trailing space": "job-1 ",
    "a trailing no-break space": "job-1\u00a0",
    "too long": "j" * (names.MAX_NAME_LENGTH + 1),
}

ACCEPTED = [
    "job-1",
    "a",
    "nightly report 2026-11-26",  # spaces inside are fine
    "rapport-été",
    "ジョブ",
    "📦-42",
    "x" * names.MAX_NAME_LENGTH,
    "550e8400-e29b-41d4-a716-446655440000",
    "[bold]not markup[/bold]",  # text; the CLI escapes it when it shows it
]


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
def test_refused_as_a_new_name(value: str) -> None:
    with pytest.raises(InvalidJobId, match="job id"):
        names.checked_new(value)
    with pytest.raises(InvalidJobId, match="queue"):
        names.checked_new(value, "queue")


@pytest.mark.parametrize("value", ACCEPTED)
def test_accepted_as_a_new_name(value: str) -> None:
    assert names.checked_new(value) == value


@pytest.mark.parametrize("value", [5, None, b"job-1", ["job-1"]])
def test_a_name_must_be_text(value: object) -> None:
    with pytest.raises(InvalidJobId, match="must be a string"):
        names.checked_new(value)
    with pytest.raises(InvalidJobId, match="must be a string"):
        names.checked_lookup(value)


def test_the_message_says_which_character_and_where() -> None:
    with pytest.raises(InvalidJobId, match=r"control character \(U\+0009 at position 3\)"):
        names.checked_new("job\t1")


@pytest.mark.parametrize("stored", ["job\t1", " padded ", "\u202eevil", "line\nbreak", "   "])
def test_names_stored_before_the_rule_can_still_be_looked_up(stored: str) -> None:
    assert names.checked_lookup(stored) == stored


@pytest.mark.parametrize("impossible", ["bad\udcffid", "nul\x00"])
def test_a_name_no_database_can_hold_is_refused_on_lookup(impossible: str) -> None:
    with pytest.raises(InvalidJobId):
        names.checked_lookup(impossible)
