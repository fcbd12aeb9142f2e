from __future__ import annotations

import os

import pytest

from jobledger.errors import InvalidIdentity
from jobledger.identity import Identity, new_identity, parse, validate


def test_new_identity_names_this_host_and_pid_with_a_fresh_nonce() -> None:
    first, second = new_identity(), new_identity()
    assert parse(first).pid == os.getpid()
    assert first != second  # the nonce differs: a restart never inherits claims


def test_round_trip() -> None:
    assert (
        str(parse("web-1.example:4242:9f1c2ab07d3e4410")) == "web-1.example:4242:9f1c2ab07d3e4410"
    )
    assert parse("h:1:abcdef01") == Identity("h", 1, "abcdef01")


def test_awkward_hostnames_are_cleaned() -> None:
    assert validate(new_identity(host="my host:with colon"))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "host",
        "host:12",
        "host:pid:abcdef01",
        "host:12:XYZ",
        ":12:abcdef01",
        "a:b:c:d",
        42,
        None,
    ],
)
def test_malformed_identities_are_refused(bad: object) -> None:
    with pytest.raises(InvalidIdentity, match="hostname:pid:nonce"):
        parse(bad)  # type: ignore[arg-type]
