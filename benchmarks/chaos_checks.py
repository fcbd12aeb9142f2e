"""The chaos run's verdicts, from the ledger's own history and the processes' logs.

Inputs are plain data, so the checks can be read (and tested) without a run:
the ledger's export (one dict per event, ``t`` its database-clock time in epoch
seconds), the workers' JSON lines, and the harness's record of what it did to
whom and when (:class:`Timeline`). Every check returns violations; a run passes
when there are none.

What counts as what:

- **lost**: at the end (after the drain) a job is neither ``completed`` nor
  ``abandoned`` with its attempts exhausted by policy (``attempt >= max``). A job
  still ``enqueued``, ``claimed`` (its holder is gone by then: every worker has
  stopped) or ``abandoned`` below the cap (never requeued) is lost.
- **completed twice**: more than one ``completed`` event for a job, or a worker
  that logged a completion the ledger does not hold (same job, process, token).
- **zombie write**: a ``heartbeat``/``completed``/``failed``/``released`` event
  whose process is not the current claim's holder, or an ``abandoned`` event
  whose token is not the current claim's; or a worker's logged completion whose
  token is not the claim the ledger completed.
- **live abandon**: an ``abandoned`` event naming a holder that was alive at that
  moment: not SIGKILLed yet, not exited, not inside a SIGSTOP (from the stop to
  one second after SIGCONT, or to its exit if it then found itself presumed dead).
- **slow detection**: a SIGKILLed holder's claim not abandoned within TTL + 2 s of
  the kill. When liveness could not be trusted meanwhile (a Redis restart pauses
  abandonment for a TTL; a SQLite writer holding the lock delays every append),
  the deadline moves by that much and the claim counts as *excused*, not silent.
  On SQLite the lock's holder may also be a worker SIGSTOPped inside a command:
  a stop during which the ledger appended nothing at all (every writer, the
  projectors' abandons included, waited for its SIGCONT) counts as a lock hold.
- **verify**: ``Ledger.verify()`` found problems.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Events only the current claim's holder may append.
HOLDER_WRITES = frozenset({"heartbeat", "completed", "failed", "released"})
#: Events that end a claim.
CLAIM_ENDS = frozenset({"completed", "failed", "released", "abandoned"})
#: After SIGCONT, how long an abandon decided during the stop may still land.
CONT_SLACK = 1.0
#: The allowance past the TTL for a dead holder's jobs (issue 16).
DETECTION_SLACK = 2.0
#: SQLite: this long with no append at all during a SIGSTOP means the stopped worker held
#: the write lock (busy workers append every few milliseconds).
QUIET = 1.0


@dataclass(frozen=True)
class Violation:
    kind: str  # lost, completed-twice, zombie-write, live-abandon, slow-detection, verify
    job: str | None
    detail: str
    #: Which known defect it looks like (a heuristic, for the reader): "item 4", "NEW?", ...
    hint: str = ""


@dataclass
class Timeline:
    """What the harness did and what the workers said about themselves, in epoch seconds."""

    ttl: float
    backend: str
    max_attempts: int
    killed: dict[str, float] = field(default_factory=dict)
    stops: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    exited: dict[str, float] = field(default_factory=dict)
    presumed_dead: dict[str, float] = field(default_factory=dict)
    redis_restarts: list[float] = field(default_factory=list)
    lock_holds: list[tuple[float, float]] = field(default_factory=list)
    #: SQLite: SIGSTOPs of a worker that held the write lock (see frozen_stops).
    frozen_stops: list[tuple[float, float]] = field(default_factory=list)
    workers: set[str] = field(default_factory=set)

    def dead_at(self, identity: str, moment: float) -> bool:
        """Whether ``identity`` could rightly be taken for dead at ``moment``."""
        if identity not in self.workers:
            return True  # not one of ours (cannot happen in a run; never judged live)
        if self.killed.get(identity, float("inf")) <= moment:
            return True
        if self.exited.get(identity, float("inf")) <= moment:
            return True
        return any(
            self._inside_stop(identity, start, end, moment) for start, end in self.stops[identity]
        )

    def _inside_stop(self, identity: str, start: float, end: float, moment: float) -> bool:
        if moment < start:
            return False
        # A worker that found itself presumed dead after the stop is dead until it exits.
        if self.presumed_dead.get(identity, float("inf")) >= start:
            return True
        return moment <= end + CONT_SLACK

    def excused_delay(self, start: float, end: float) -> float:
        """Seconds during [start, end] when abandonment was rightly held back."""
        delay = 0.0
        for restart in self.redis_restarts:
            if start - self.ttl <= restart <= end:
                delay = max(delay, restart + 2 * self.ttl - start)
        for hold_start, hold_end in self.lock_holds + self.frozen_stops:
            if hold_start <= end and hold_end >= start - self.ttl:
                delay += hold_end - max(hold_start, start - self.ttl)
        return delay


@dataclass
class Verdict:
    violations: list[Violation]
    latencies: list[float]  # seconds from SIGKILL to the abandon, per claim held at the kill
    excused: int  # dead holders' claims abandoned late while liveness could not be trusted
    figures: dict[str, Any]


def by_job(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    histories: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        histories[event["job_id"]].append(event)
    for history in histories.values():
        history.sort(key=lambda e: e["version"])
    return histories


def judge(
    histories: dict[str, list[dict[str, Any]]],
    worker_lines: list[dict[str, Any]],
    timeline: Timeline,
    verify_problems: list[str],
) -> Verdict:
    """Every check, over one run."""
    timeline.frozen_stops = frozen_stops(histories, timeline)
    violations = lost_jobs(histories, timeline)
    violations += completed_twice(histories, worker_lines)
    violations += zombie_writes(histories, worker_lines)
    violations += live_abandons(histories, timeline)
    slow, latencies, excused = detection(histories, timeline)
    violations += slow
    violations += [Violation("verify", None, problem) for problem in verify_problems]
    return Verdict(violations, latencies, excused, figures(histories, latencies, timeline))


def frozen_stops(
    histories: dict[str, list[dict[str, Any]]], timeline: Timeline
) -> list[tuple[float, float]]:
    """SQLite: the stretches of SIGSTOPs during which the ledger appended nothing.

    A worker stopped inside a command keeps SQLite's one write lock until SIGCONT,
    and every writer waits: the others' heartbeats and completions, and the
    projectors' abandons. A dozen busy workers append every few milliseconds, so a
    stretch of a stop (stops are longer than the TTL) at least ``QUIET`` long
    without a single append is one whose worker held the lock. The parts of a stop
    inside the harness's own lock holds prove nothing and are left out.
    """
    if timeline.backend != "sqlite":
        return []
    moments = sorted(event["t"] for history in histories.values() for event in history)
    frozen = []
    for stops in timeline.stops.values():
        for start, end in stops:
            if end == float("inf"):
                continue
            stretches = outside(start, end, timeline.lock_holds)
            long_ones = [(a, b) for a, b in stretches if b - a >= QUIET]
            if long_ones and not any(appended(moments, a, b) for a, b in long_ones):
                frozen += long_ones
    return sorted(frozen)


def outside(
    start: float, end: float, holds: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The parts of [start, end] outside every interval of ``holds``."""
    parts = [(start, end)]
    for hold_start, hold_end in holds:
        parts = [
            piece
            for a, b in parts
            for piece in ((a, min(b, hold_start)), (max(a, hold_end), b))
            if piece[1] > piece[0]
        ]
    return parts


def appended(moments: list[float], start: float, end: float) -> bool:
    """Whether any event's time (``moments``, sorted) falls inside (start, end)."""
    first_after = bisect.bisect_right(moments, start)
    return first_after < len(moments) and moments[first_after] < end


def lost_jobs(histories: dict[str, list[dict[str, Any]]], timeline: Timeline) -> list[Violation]:
    found = []
    for job, history in histories.items():
        state, attempt = final_state(history)
        if state == "completed" or (state == "abandoned" and attempt >= timeline.max_attempts):
            continue
        if state == "abandoned":
            hint = "item 5 (abandoned below the attempt cap, never requeued)"
        elif state == "claimed":
            hint = "NEW? (claimed by a holder that is gone)"
        else:
            hint = "drain too short, or NEW?"
        found.append(Violation("lost", job, f"ends {state} at attempt {attempt}", hint))
    return found


def final_state(history: list[dict[str, Any]]) -> tuple[str, int]:
    """(state, attempt) after the job's last event, folded the way the lifecycle does."""
    state, attempt = "enqueued", 0
    moves = {"claimed": "claimed", "completed": "completed", "failed": "failed"}
    moves |= {"released": "enqueued", "abandoned": "abandoned", "requeued": "enqueued"}
    moves |= {"cancelled": "cancelled", "enqueued": "enqueued"}
    for event in history:
        if event["type"] == "claimed":
            attempt += 1
        state = moves.get(event["type"], state)  # heartbeat and rejected change nothing
    return state, attempt


def completed_twice(
    histories: dict[str, list[dict[str, Any]]], worker_lines: list[dict[str, Any]]
) -> list[Violation]:
    found = []
    for job, history in histories.items():
        count = sum(1 for e in history if e["type"] == "completed")
        if count > 1:
            found.append(Violation("completed-twice", job, f"{count} completed events"))
    completions = {
        (job, e["process"]) for job, h in histories.items() for e in h if e["type"] == "completed"
    }
    for line in worker_lines:
        if line["event"] == "completed" and (line["job"], line["identity"]) not in completions:
            found.append(
                Violation(
                    "completed-twice",
                    line["job"],
                    f"worker {line['identity']} believes it completed the job (token "
                    f"{line['token']}), the ledger holds no such completion",
                )
            )
    return found


def zombie_writes(
    histories: dict[str, list[dict[str, Any]]], worker_lines: list[dict[str, Any]]
) -> list[Violation]:
    found = []
    completed_token: dict[str, int] = {}
    for job, history in histories.items():
        holder: tuple[int, str] | None = None  # (token, process) of the current claim
        for event in history:
            kind = event["type"]
            if kind in HOLDER_WRITES and (holder is None or event["process"] != holder[1]):
                found.append(
                    Violation(
                        "zombie-write",
                        job,
                        f"{kind} v{event['version']} by {event['process']} accepted while the "
                        f"claim was {holder}",
                    )
                )
            if kind == "abandoned" and (holder is None or event["data"]["token"] != holder[0]):
                found.append(
                    Violation(
                        "zombie-write", job, f"abandoned v{event['version']} of a stale token"
                    )
                )
            if kind == "completed" and holder is not None:
                completed_token[job] = holder[0]
            if kind == "claimed":
                holder = (event["version"], event["process"])
            elif kind in CLAIM_ENDS:
                holder = None
    for line in worker_lines:
        if line["event"] == "completed" and completed_token.get(line["job"]) not in (
            None,
            line["token"],
        ):
            found.append(
                Violation(
                    "zombie-write",
                    line["job"],
                    f"worker {line['identity']} completed with token {line['token']}, the ledger "
                    f"completed token {completed_token[line['job']]}",
                )
            )
    return found


def live_abandons(
    histories: dict[str, list[dict[str, Any]]], timeline: Timeline
) -> list[Violation]:
    found = []
    for job, history in histories.items():
        for event in history:
            if event["type"] != "abandoned":
                continue
            holder, moment = event["data"]["holder"], event["t"]
            if timeline.dead_at(holder, moment):
                continue
            by_worker = event["process"] in timeline.workers
            found.append(
                Violation(
                    "live-abandon",
                    job,
                    f"abandoned at {event['recorded_at']} (token {event['data']['token']}) naming "
                    f"live holder {holder}, by {'takeover of ' if by_worker else 'projector '}"
                    f"{event['process']}: {event['data']['reason']}",
                    live_abandon_hint(timeline, moment, by_worker),
                )
            )
    return found


def live_abandon_hint(timeline: Timeline, moment: float, by_worker: bool) -> str:
    after_restart = any(0 <= moment - r <= 2 * timeline.ttl + 1 for r in timeline.redis_restarts)
    if by_worker and after_restart:
        return "item 4 (takeover right after a Redis restart)"
    if timeline.backend == "sqlite":
        near_hold = any(
            start - 1 <= moment <= end + 2 * timeline.ttl
            for start, end in timeline.lock_holds + timeline.frozen_stops
        )
        why = "a writer held the lock" if near_hold else "lease refreshes queued behind writers"
        return f"item 6 (SQLite: {why})"
    if after_restart:
        return "item 4? (after a Redis restart, by a projector)"
    return "NEW?"


def detection(
    histories: dict[str, list[dict[str, Any]]], timeline: Timeline
) -> tuple[list[Violation], list[float], int]:
    """Claims held by SIGKILLed holders: abandoned in time? Their latencies."""
    found: list[Violation] = []
    latencies: list[float] = []
    excused = 0
    for job, history in histories.items():
        for claim, end in claims(history):
            killed = timeline.killed.get(claim["process"])
            if killed is None or claim["t"] > killed or (end is not None and end["t"] < killed):
                continue  # not held by a killed process at its death
            deadline = killed + timeline.ttl + DETECTION_SLACK
            if end is None or end["type"] != "abandoned":
                how = "never ended" if end is None else f"ended by {end['type']}"
                found.append(
                    Violation("slow-detection", job, f"claim v{claim['version']} {how}", "NEW?")
                )
                continue
            latencies.append(end["t"] - killed)
            if end["t"] <= deadline:
                continue
            extended = deadline + timeline.excused_delay(killed, end["t"])
            if end["t"] <= extended:
                excused += 1
                continue
            found.append(
                Violation(
                    "slow-detection",
                    job,
                    f"holder {claim['process']} SIGKILLed at {killed:.3f}, claim v"
                    f"{claim['version']} abandoned {end['t'] - killed:.2f} s later "
                    f"(TTL {timeline.ttl} + {DETECTION_SLACK} s)",
                    "NEW?",
                )
            )
    return found, latencies, excused


def claims(history: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each claimed event with the event that ended it (None: still claimed)."""
    result: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    current: dict[str, Any] | None = None
    for event in history:
        if event["type"] == "claimed":
            current = event
        elif event["type"] in CLAIM_ENDS and current is not None:
            result.append((current, event))
            current = None
    if current is not None:
        result.append((current, None))
    return result


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def figures(
    histories: dict[str, list[dict[str, Any]]], latencies: list[float], timeline: Timeline
) -> dict[str, Any]:
    """Counts from the history, and the detection latency percentiles."""
    events = [e for h in histories.values() for e in h]
    types: Counter[str] = Counter(e["type"] for e in events)
    by_projector = [
        e for e in events if e["type"] == "abandoned" and e["process"] not in timeline.workers
    ]
    ends = Counter(final_state(h)[0] for h in histories.values())
    return {
        "jobs": len(histories),
        "events": sum(types.values()),
        "completed": ends["completed"],
        "left_abandoned": ends["abandoned"],
        "claims": types["claimed"],
        "abandons": types["abandoned"],
        "abandons_by_projector": len(by_projector),
        "requeues": types["requeued"],
        "rejected_writes": types["rejected"],
        "frozen_stops": len(timeline.frozen_stops),
        "latency_p50": statistics.median(latencies) if latencies else None,
        "latency_p99": percentile(latencies, 0.99),
        "latency_max": max(latencies) if latencies else None,
    }
