"""A real ``jobledger recover --metrics-port 0`` process, scraped over HTTP."""

from __future__ import annotations

import re
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobledger.testing import RedisServer
from tests.conftest import truncate_all
from tests.faults.conftest import private_redis
from tests.helpers import JOBLEDGER, wait_for


class Recover:
    """``jobledger recover`` with metrics on a port the system chose, read from its stderr."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [JOBLEDGER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.said: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: self.url is not None or self.process.poll() is not None, timeout=30)
        assert self.url is not None, "".join(self.said)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.said.append(line)

    @property
    def url(self) -> str | None:
        for line in list(self.said):
            found = re.search(r"serving (http://\S+)/metrics", line)
            if found:
                return found.group(1)
        return None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """A sample's value now; 0 when the series does not exist yet."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server this test may stop and start."""
    server = private_redis()
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    truncate_all(postgres_url)
    return postgres_url
