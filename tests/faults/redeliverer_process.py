"""A redeliverer to SIGKILL: delivers to RQ slowly, one line on stdout per delivery.

python -m tests.faults.redeliverer_process DATABASE_URL RQ_URL BATCH_SIZE DELAY
"""

from __future__ import annotations

import json
import sys
import time

from jobledger import Ledger
from jobledger.integrations.rq import RQTarget
from jobledger.records import JobStatus
from jobledger.redelivery import Redeliverer


class SlowRQ(RQTarget):
    """RQ delivery, then a pause: a kill lands after a delivery, before its batch commits."""

    def __init__(self, url: str, delay: float) -> None:
        super().__init__(url)
        self.delay = delay

    def deliver(self, job: JobStatus) -> None:
        super().deliver(job)
        print(json.dumps({"event": "delivered", "job": job.job_id}), flush=True)
        time.sleep(self.delay)


def main() -> None:
    database_url, rq_url, batch_size, delay = sys.argv[1:]
    with Ledger(database_url) as ledger:
        redeliverer = Redeliverer(ledger, SlowRQ(rq_url, float(delay)), batch_size=int(batch_size))
        redeliverer.run_once()
        print(json.dumps({"event": "caught up"}), flush=True)


if __name__ == "__main__":
    main()
