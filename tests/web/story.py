"""A small ledger with a job in every state, a dead holder and hostile names, for the web tests."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from jobledger import Ledger
from jobledger.catchup import CatchUp
from jobledger.errors import StaleClaim
from jobledger.identity import new_identity
from jobledger.liveness import Liveness, ProcessInfo
from jobledger.stats import QueueStats

SCRIPT_ID = "<script>alert(1)</script>"
MARKUP_ID = "[/bold]"
HOSTILE_QUEUE = "<i>mail</i>"
HOSTILE_ERROR = "<img src=x onerror=alert(2)>"
HOSTILE_PAYLOAD = {"note": "</script><script>alert(3)</script>", "markup": "[red]x[/red]"}
#: The states the story leaves its jobs in, and how many of each.
COUNTS = {
    "enqueued": 2,
    "claimed": 3,
    "completed": 2,
    "failed": 1,
    "abandoned": 2,
    "cancelled": 1,
}
ZOMBIE_STORY = ["enqueued", "claimed", "abandoned", "requeued", "claimed", "rejected", "completed"]


@dataclass(frozen=True)
class Story:
    live: str  # the identity of a registered, live process
    dead: str  # a holder that never registered: presumed dead


def tell(ledger: Ledger, liveness: Liveness, max_attempts: int = 3) -> Story:
    """Fill ``ledger`` (and register one live process), then count the queue figures."""
    live, dead, old = new_identity(), new_identity(), new_identity()
    liveness.register(ProcessInfo(live, "web-test", 4242, datetime.now(timezone.utc), busy=1))

    ledger.enqueue("waiting-1", queue="default", data={"n": 1})
    ledger.enqueue(MARKUP_ID, queue=HOSTILE_QUEUE, data=HOSTILE_PAYLOAD)

    ledger.enqueue("running-1", queue="default")
    ledger.heartbeat(ledger.claim("running-1", live), progress={"done": 0.5})
    for job_id in ("orphan-1", SCRIPT_ID):
        ledger.enqueue(job_id, queue="default")
        ledger.claim(job_id, dead)

    ledger.enqueue("done-1", queue="default")
    ledger.complete(ledger.claim("done-1", live), result={"ok": True})

    ledger.enqueue("failed-1", queue=HOSTILE_QUEUE)
    ledger.fail(ledger.claim("failed-1", live), error=HOSTILE_ERROR)

    ledger.enqueue("abandoned-1", queue="default")
    claim = ledger.claim("abandoned-1", old)
    ledger.abandon("abandoned-1", claim.token, reason="holder lapsed")

    ledger.enqueue("poison-1", queue="default")  # dies with every holder: attempts exhausted
    for attempt in range(max_attempts):
        claim = ledger.claim("poison-1", old)
        ledger.abandon("poison-1", claim.token, reason="holder lapsed")
        if attempt < max_attempts - 1:
            ledger.requeue("poison-1", reason="policy")

    ledger.enqueue("cancelled-1", queue="default")
    ledger.cancel("cancelled-1", reason="not needed")

    # A zombie: its claim was abandoned and re-given; its late completion is refused.
    ledger.enqueue("zombie-1", queue="default", data={"order": 7})
    stale = ledger.claim("zombie-1", old)
    ledger.abandon("zombie-1", stale.token, reason="holder lapsed")
    ledger.requeue("zombie-1", reason="policy")
    fresh = ledger.claim("zombie-1", live)
    with contextlib.suppress(StaleClaim):
        ledger.complete(stale, result={"late": True})
    ledger.complete(fresh)

    count_all(ledger)
    return Story(live=live, dead=dead)


def count_all(ledger: Ledger, timeout: float = 120.0) -> None:
    """Run the queue figures' catch-up until it has every event.

    On PostgreSQL a transaction open elsewhere on the server (another test's) holds
    the catch-up horizon back for a moment; it never skips, so wait for it.
    """
    runner = CatchUp(ledger, QueueStats())
    deadline = time.monotonic() + timeout
    while True:
        runner.run_once()
        if runner.checkpoint().position >= ledger.last_position():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"queue_stats did not catch up: {runner.holdup()}")
        time.sleep(0.05)
