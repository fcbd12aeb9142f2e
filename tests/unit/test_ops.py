"""Metrics labels stay bounded and escaped; health verdicts follow the loop; observers
never break the loop they watch; the core imports without prometheus_client."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobledger import observers
from jobledger.errors import ConfigurationError
from jobledger.observers import Observers, RecoveryObserver, observing
from jobledger.ops import OTHER, BoundedLabels, Health, RecoveryMetrics, Verdict


def _samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_labels_keep_the_first_values_and_bucket_the_rest() -> None:
    labels = BoundedLabels(2)
    assert [labels(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]
    assert labels.kept == {"a", "b"}
    assert labels.full
    assert BoundedLabels(0)("a") == OTHER
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ConfigurationError, match="label limit"):
            BoundedLabels(bad)  # type: ignore[arg-type]


def test_queue_labels_are_capped_across_every_metric() -> None:
    registry = CollectorRegistry()
    metrics = RecoveryMetrics(registry, queues=BoundedLabels(2))
    for n in range(100):  # a hundred queues, e.g. one per customer
        metrics.claim_ended(f"queue-{n}", requeued=n % 2 == 0, latency=0.5)
        metrics.redelivered(f"queue-{n}")
    seen = _samples(registry)
    abandoned = {
        dict(labels)["queue"]: value
        for (name, labels), value in seen.items()
        if name == "jobledger_recovery_abandoned_total"
    }
    assert abandoned == {"queue-0": 1, "queue-1": 1, OTHER: 98}
    redelivered = {dict(ls)["queue"] for (n, ls) in seen if n == "jobledger_redelivered_total"}
    assert redelivered == {"queue-0", "queue-1", OTHER}
    assert seen[("jobledger_recovery_detection_latency_seconds_count", frozenset())] == 100


def test_hostile_queue_names_are_escaped_by_the_exposition() -> None:
    registry = CollectorRegistry()
    metrics = RecoveryMetrics(registry)
    hostile = 'a"} 1\njobledger_fake{x="'
    metrics.orphan_found(hostile)
    metrics.orphan_found("[/bold]<script>")
    seen = _samples(registry)
    found = {
        dict(labels)["queue"]
        for (name, labels) in seen
        if name == "jobledger_recovery_orphans_found_total"
    }
    assert found == {hostile, "[/bold]<script>"}  # read back intact: nothing was injected
    assert not any(name.startswith("jobledger_fake") for name, _ in seen)


def test_sweeps_pauses_and_holders() -> None:
    registry = CollectorRegistry()
    metrics = RecoveryMetrics(registry)
    metrics.sweep_finished(observers.OK, 0.01)
    metrics.sweep_finished(observers.MASS_DEATH, 0.02)
    metrics.sweep_finished(observers.LIVENESS_UNREACHABLE, 0.5)
    metrics.sweep_finished(observers.DATABASE_UNREACHABLE, 0.5)
    metrics.holders_seen(alive=3, dead=1)
    seen = _samples(registry)

    def value(name: str, **labels: str) -> float:
        return seen[(name, frozenset(labels.items()))]

    assert value("jobledger_recovery_sweeps_total", outcome="ok") == 1
    assert value("jobledger_recovery_sweeps_total", outcome="paused") == 1
    assert value("jobledger_recovery_sweeps_total", outcome="failed") == 2
    assert value("jobledger_recovery_paused_sweeps_total", reason="mass_death") == 1
    assert value("jobledger_recovery_paused_sweeps_total", reason="liveness_unreachable") == 1
    assert value("jobledger_recovery_paused_sweeps_total", reason="liveness_restarted") == 0
    assert value("jobledger_recovery_paused", reason="mass_death") == 0  # the last one wins
    assert value("jobledger_recovery_paused", reason="liveness_unreachable") == 0
    assert value("jobledger_recovery_sweep_duration_seconds_count") == 4
    assert value("jobledger_recovery_holders", state="alive") == 3
    assert value("jobledger_recovery_holders", state="dead") == 1
    assert value("jobledger_recovery_last_ok_sweep_timestamp_seconds") > 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_health_follows_the_loop() -> None:
    clock = Clock()
    health = Health(stall_after=10, clock=clock)
    assert health.live().ok
    assert health.ready() == Verdict(False, "starting: no sweep yet")
    health.sweep_finished(observers.OK, 0.1)
    health.round_finished(next_in=1.0)
    assert health.ready().ok
    clock.now += 11.0  # on time: 1 s until the next round, 10 s of slack
    assert health.live().ok
    clock.now += 0.5
    assert not health.live().ok
    assert health.live().reason.startswith("stalled")
    assert not health.ready().ok
    health.sweep_finished(observers.LIVENESS_UNREACHABLE, 0.1)
    health.round_finished(next_in=30.0)  # backing off is not a stall
    assert health.live().ok
    assert health.ready().reason == "last sweep: liveness_unreachable"
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="stall_after"):
            Health(stall_after=bad)


def test_a_failing_observer_never_reaches_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class Broken(RecoveryObserver):
        def orphan_found(self, queue: str) -> None:
            raise RuntimeError("boom")

    class Noting(RecoveryObserver):
        def orphan_found(self, queue: str) -> None:
            calls.append(queue)

    both = Observers([Broken(), Noting()])
    both.orphan_found("q")
    assert calls == ["q"]
    assert "boom" in caplog.text
    assert observing(both) is both
    observing(None).claim_ended("q", True, None)  # no observer: nothing happens


def test_the_core_imports_without_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import jobledger.recovery, jobledger.redelivery, jobledger.cli\n"
        "from jobledger import RecoveryProjector\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout == "ok\n", done.stderr
