"""mask(): no part of a password in a URL ever shows (issue 16.7)."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from jobledger.database import mask


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        # An unencoded "@": urllib and redis-py split at the last one, SQLAlchemy at the first.
        ("redis://:Sup3r@TopSecret@127.0.0.1:6390/15", "redis://:***@127.0.0.1:6390/15"),
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),  # SQLAlchemy's reading
        ("postgresql://u@h/db?password=Sup3r", "postgresql://u@h/db?password=***"),
        (
            "redis://h:6379/0?db=1&PassWord=x&sslpassword=y",
            "redis://h:6379/0?db=1&PassWord=***&sslpassword=***",
        ),
        ("redis://h/0?ssl_password=x&pass%77ord=y", "redis://h/0?ssl_password=***&pass%77ord=***"),
        (
            "postgresql://h/db?passfile=/home/u/.pgpass",
            "postgresql://h/db?passfile=/home/u/.pgpass",
        ),
        ("postgres ql://u:Secret@h/x", "postgres ql://u:***@h/x"),  # a mistyped scheme
        ("sqlite:////tmp/a@b:c.db", "sqlite:////tmp/a@b:c.db"),
        ("sqlite:///C:/x/ledger.db", "sqlite:///C:/x/ledger.db"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///run/redis.sock?password=x&db=2", "unix:///run/redis.sock?password=***&db=2"),
    ],
)
def test_mask(url: str, masked: str) -> None:
    assert mask(url) == masked


def test_a_parsed_url_is_masked_alike() -> None:
    url = make_url("postgresql+psycopg://u:p%40ss@h/db?password=Sup3r&application_name=x")
    assert mask(url) == "postgresql+psycopg://u:***@h/db?application_name=x&password=***"


#: Password characters that URL parsers disagree about, around markers that occur nowhere else.
passwords = st.text(alphabet="@/:?#&=%ab", max_size=8).map(lambda middle: f"Q{middle}Z")


@given(passwords)
def test_no_part_of_a_userinfo_password_shows(password: str) -> None:
    for url in (
        f"redis://user:{password}@127.0.0.1:6390/15",
        f"postgresql://user:{password}@127.0.0.1:5432/db",
    ):
        shown = mask(url)
        assert "Q" not in shown, shown
        assert "Z" not in shown, shown
        with_parsers = [urlsplit(url).password or ""]
        with contextlib.suppress(Exception):
            with_parsers.append(make_url(url).password or "")
        for read in with_parsers:
            assert not read or read not in shown


@given(passwords, st.sampled_from(["password", "PASSWORD", "sslpassword", "ssl_password"]))
def test_no_secret_query_parameter_shows(password: str, name: str) -> None:
    shown = mask(f"redis://127.0.0.1:6390/15?db=1&{name}={password}&socket_timeout=2")
    assert "Q" not in shown
    assert shown.endswith("&socket_timeout=2") or "#" in password


def test_redis_reads_the_password_mask_hides() -> None:
    # redis-py takes everything up to the last "@" as the password: the mask hides all of it.
    url = "redis://:Sup3r@TopSecret@127.0.0.1:6390/15"
    kwargs = redis.connection.parse_url(url)
    assert kwargs["password"] == "Sup3r@TopSecret"
    assert "Sup3r" not in mask(url)
    assert "TopSecret" not in mask(url)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://h:6379/0?password=x@y", "redis://h:***"),
        ("postgresql://u:pa?password=x@h/db", "postgresql://u:***"),
        ("postgresql://u:p@h/db?options=a@b", "postgresql://u:***@b"),  # hides more, never less
    ],
)
def test_overlapping_secrets_are_masked_whole(url: str, masked: str) -> None:
    assert mask(url) == masked
