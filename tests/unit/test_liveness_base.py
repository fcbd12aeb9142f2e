"""What the built-in liveness backends share: chunking, alive() and closing."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from jobledger import RedisLiveness, SqlLiveness
from jobledger.errors import ConfigurationError
from jobledger.liveness import DEFAULT_TTL, Liveness, MemoryLiveness, ProcessInfo
from jobledger.liveness.base import CHUNK, LivenessBackend, chunked, first_live
from tests.helpers import info


class _Remembering(LivenessBackend):
    """A backend that knows who is alive and asks nothing else."""

    def __init__(self, left: dict[str, float]) -> None:
        self.ttl = DEFAULT_TTL
        self.left = left
        self.closed = 0
        self.asked: list[list[str]] = []

    def remaining(self, identities: Collection[str]) -> dict[str, float | None]:
        self.asked.append(list(identities))
        return {identity: self.left.get(identity) for identity in identities}

    def close(self) -> None:
        self.closed += 1


def test_chunks_cover_everything_in_order_and_none_is_too_big() -> None:
    identities = [f"p{n}" for n in range(2 * CHUNK + 3)]
    chunks = list(chunked(identities))
    assert [len(chunk) for chunk in chunks] == [CHUNK, CHUNK, 3]
    assert [identity for chunk in chunks for identity in chunk] == identities
    assert list(chunked([])) == []


def test_alive_is_remaining_in_one_call() -> None:
    backend = _Remembering({"a": 1.5, "b": 0.0})
    assert backend.alive(["a", "b", "c"]) == {"a": True, "b": True, "c": False}
    assert backend.asked == [["a", "b", "c"]]


def test_a_backend_closes_when_its_block_ends() -> None:
    with _Remembering({}) as backend:
        assert backend.closed == 0
    assert backend.closed == 1


def test_the_built_in_backends_share_the_base_and_meet_the_protocol() -> None:
    assert issubclass(SqlLiveness, LivenessBackend)
    with RedisLiveness("redis://127.0.0.1:1/0") as redis_liveness:  # connects on first use
        assert isinstance(redis_liveness, LivenessBackend)
        assert isinstance(redis_liveness, Liveness)


class _Client:
    """Just enough of a redis-py client for RedisLiveness to be made and closed."""

    def __init__(self) -> None:
        self.closed = 0

    def register_script(self, script: str) -> object:
        return object()

    def close(self) -> None:
        self.closed += 1


def test_redis_liveness_leaves_a_callers_client_open() -> None:
    client = _Client()
    with RedisLiveness(client, ttl=5):  # type: ignore[arg-type]
        pass
    assert client.closed == 0


def test_redis_liveness_closes_the_client_it_made() -> None:
    liveness = RedisLiveness("redis://127.0.0.1:1/0")  # connects on first use: never here
    closed: list[bool] = []
    liveness.client.close = lambda: closed.append(True)  # type: ignore[method-assign]
    liveness.close()
    assert closed == [True]


class _Unordered(MemoryLiveness):
    """A backend of the protocol alone: no first_processes, and processes() in any order."""

    def processes(self) -> list[ProcessInfo]:
        return list(reversed(super().processes()))


def test_first_live_of_a_backend_without_its_own_read_sorts_every_record() -> None:
    liveness = _Unordered(ttl=DEFAULT_TTL)
    registered = [info() for _ in range(5)]
    for record in registered:
        liveness.register(record)
    by_identity = sorted(registered, key=lambda record: record.identity)
    assert not hasattr(liveness, "first_processes")
    assert first_live(liveness, 2) == (by_identity[:2], 5)
    assert first_live(liveness, 9) == (by_identity, 5)
    with pytest.raises(ConfigurationError, match="limit must be an integer >= 0"):
        first_live(liveness, True)
