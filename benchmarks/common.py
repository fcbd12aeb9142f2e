"""What every benchmark module shares: the result row, settings, timing and scratch databases.

A benchmark module exposes ``run(settings: Settings) -> list[Row]``. Each row
holds jobledger's figure and, where there is one, the baseline's figure from the
same run, so the ratio compares like with like on the same machine at the same
moment. The two sides never run far apart in time: short blocks of operations
alternate (ours, baseline, baseline, ours, ...) and each side's rate is the
block size over its median block time (:func:`interleaved`), so background load
on a small shared machine, and a shared PostgreSQL server's WAL flushes, fall
on both sides alike, and one block caught by another tenant's burst does not
decide a row. Long runs (100k-job batches) alternate whole rounds instead
(:func:`paired_rates`).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from jobledger.liveness import ProcessInfo, RedisLiveness
from jobledger.testing import DEFAULT_POSTGRES_URL, scratch_database

POSTGRES_SERVER_URL = os.environ.get("JOBLEDGER_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@dataclass(frozen=True)
class Settings:
    """How much work each benchmark does: ``quick`` trades precision for minutes."""

    quick: bool

    def pick(self, quick: int, full: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    benchmark: str
    ours: float | None
    baseline: float | None
    unit: str
    baseline_name: str = "—"
    target: str = ""
    #: ``ratio`` is ours/baseline when more is better (throughput), baseline/ours otherwise.
    higher_is_better: bool = True
    #: Whether the target is met; ``None`` when there is no figure yet.
    met: bool | None = None
    note: str = ""
    #: The median of per-round ratios, when the benchmark paired its rounds.
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if not self.ours or not self.baseline:
            return None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours


def placeholder(benchmark: str, baseline_name: str, target: str, owner: str) -> Row:
    """A row that is not measured yet (``owner`` fills it in)."""
    return Row(benchmark, None, None, "", baseline_name, target, note=f"to be measured ({owner})")


@dataclass(frozen=True)
class Paired:
    """Medians of two sides measured in alternating rounds, and of their per-round ratios."""

    ours: float
    baseline: float
    ratio: float
    rounds: int
    #: Operations per block when the sides were interleaved; 0 for whole rounds.
    per_block: int = 0

    def note(self) -> str:
        if self.per_block:
            return (
                f"{self.rounds} alternating blocks of {self.per_block} operations per side; "
                "rate = block size / median block time"
            )
        return f"medians of {self.rounds} alternating rounds; ratio = median of per-round ratios"


def interleaved(
    blocks: int,
    per_block: int,
    ours: Callable[[int], object],
    baseline: Callable[[int], object],
) -> Paired:
    """Rates of two sides run in alternating blocks of ``per_block`` operations.

    Each callable runs block number ``n`` of its side. Blocks alternate in ABBA
    order; a side's rate is ``per_block`` over its median block time, and the
    ratio is the quotient of the two rates.
    """
    spent: dict[str, list[float]] = {"ours": [], "baseline": []}
    sides = [("ours", ours), ("baseline", baseline)]
    for number in range(blocks):
        for name, run in sides if number % 2 == 0 else reversed(sides):
            started = time.perf_counter()
            run(number)
            spent[name].append(time.perf_counter() - started)
    mine = per_block / statistics.median(spent["ours"])
    theirs = per_block / statistics.median(spent["baseline"])
    return Paired(mine, theirs, mine / theirs, blocks, per_block)


def paired_rates(
    rounds: int, ours: Callable[[int], float], baseline: Callable[[int], float]
) -> Paired:
    """``rounds`` alternating runs of each side; each call gets the round number.

    Each callable runs one round and returns its rate. The order flips every
    round (ours, baseline, baseline, ours, ...), so neither side always runs
    first (warmer caches, emptier WAL) and each pair ran at nearly the same time.
    """
    mine: list[float] = []
    theirs: list[float] = []
    for number in range(rounds):
        order = [(ours, mine), (baseline, theirs)]
        for run, results in order if number % 2 == 0 else reversed(order):
            results.append(run(number))
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    return Paired(
        statistics.median(mine), statistics.median(theirs), statistics.median(ratios), rounds
    )


def median_rate(
    rounds: int, ours: Callable[[int], float], baseline: Callable[[int], float]
) -> tuple[float, float]:
    """The medians of :func:`paired_rates`."""
    paired = paired_rates(rounds, ours, baseline)
    return paired.ours, paired.baseline


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank value at ``share`` (0..1) of ``values``; no interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def rate(count: int, work: Callable[[], object]) -> float:
    """``count`` divided by how many seconds ``work()`` took."""
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


@contextlib.contextmanager
def postgres_database(prefix: str = "jobledger_bench") -> Iterator[str]:
    """A scratch PostgreSQL database with the jobledger schema; dropped afterwards."""
    from jobledger import Ledger

    with scratch_database(POSTGRES_SERVER_URL, prefix=prefix) as url:
        text_url = url.render_as_string(hide_password=False)
        with Ledger(text_url) as ledger:
            ledger.migrate()
        yield text_url


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    """A temporary SQLite file with the jobledger schema; deleted afterwards."""
    from jobledger import Ledger

    with tempfile.TemporaryDirectory(prefix="jobledger-bench-") as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        with Ledger(url) as ledger:
            ledger.migrate()
        yield url


def libpq_url(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as plain libpq connection string."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def register_alive(liveness: RedisLiveness, holders: Sequence[str]) -> None:
    """Every one of ``holders`` alive for the liveness TTL, pipelined, and Redis an hour old
    (a Redis younger than the TTL is not trusted to know who is dead)."""
    now = datetime.now(timezone.utc)
    client = liveness.client
    for start in range(0, len(holders), 5000):
        pipe = client.pipeline(transaction=False)
        for identity in holders[start : start + 5000]:
            host, pid, _ = identity.split(":")
            info = ProcessInfo(identity, host, int(pid), now)
            pipe.set(
                liveness.key(info.identity),
                f'{{"host":"{info.host}","pid":{info.pid},'
                f'"started_at":"{now.isoformat()}","quiet":false,"busy":20}}',
                px=int(liveness.ttl * 1000),
            )
            pipe.sadd("{jobledger}:processes", identity)
        pipe.execute()
    born = int(time.time() * 1000) - 3_600_000
    client.set("{jobledger}:epoch", f"bench@{born}")
