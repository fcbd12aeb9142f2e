"""The sealer: a catch-up projection that links every committed event into the anchor.

Each event becomes one row of ``jobledger_anchor`` (:mod:`jobledger.anchor`
defines its digest), in the order catch-up delivers events: commit order, gap
free (:mod:`jobledger.catchup`). Commands never touch the anchor, so writers
do not queue on it; the sealer follows them from its checkpoint.

Exactly once, also with several sealers (e.g. two ``jobledger recover``): a
batch reads the chain's last link and appends after it in the transaction that
holds the checkpoint row's lock and advances the checkpoint, so a second sealer
waits on that lock and then starts after the first one's batch. A sealer that
ever did deliver an event twice would fail on the anchor's ``UNIQUE(position)``
rather than seal it twice.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, TextClause, delete, select, text

from .anchor import GENESIS, NAME, encoded_link_digest
from .catchup import CatchUp, Projection
from .encoding import canonical_string
from .errors import LedgerError
from .records import Event
from .runner import Runner
from .schema import anchor

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from .ledger import Ledger

log = logging.getLogger("jobledger.sealer")

#: Events sealed per transaction (one multi-row INSERT each).
BATCH_SIZE = 2000
#: Longest wait between retries while the database is unreachable, in seconds.
MAX_BACKOFF = 30.0

_LAST_LINK = select(anchor.c.seq, anchor.c.digest).order_by(anchor.c.seq.desc()).limit(1)


class Anchor(Projection):
    """Appends one anchor row per event, chained to the last row in the table."""

    name = NAME

    def __init__(self) -> None:
        self.sealed = 0  # events sealed by this projection (committed or not)
        self._connection: Connection | None = None  # the batch being gathered
        self._rows: list[tuple[int, int, str, int, str]] = []
        self._seq, self._digest = 0, GENESIS

    def handle(self, event: Event, connection: Connection) -> None:
        if connection is not self._connection:  # a new batch (a failed one is forgotten)
            self._connection, self._rows = connection, []
            last = connection.execute(_LAST_LINK).first()
            self._seq, self._digest = (0, GENESIS) if last is None else (last.seq, last.digest)
        self._seq += 1
        self._digest = encoded_link_digest(
            self._digest,
            self._seq,
            event.position,
            canonical_string(event.job_id),
            event.version,
            event.hash,
        )
        self._rows.append((self._seq, event.position, event.job_id, event.version, self._digest))

    def flush(self, connection: Connection) -> None:
        rows = self._rows
        full = len(rows) - len(rows) % ROWS_PER_INSERT
        chunks = [_bound(rows[n : n + ROWS_PER_INSERT]) for n in range(0, full, ROWS_PER_INSERT)]
        if chunks:
            connection.execute(_insert_of(ROWS_PER_INSERT), chunks)
        if full < len(rows):
            connection.execute(_insert_of(len(rows) - full), _bound(rows[full:]))
        self.sealed += len(rows)
        self._connection, self._rows = None, []

    def reset(self, connection: Connection) -> None:
        """Drop every link: the events are sealed again from the first, in commit order."""
        connection.execute(delete(anchor))
        self._connection, self._rows = None, []


#: Rows per INSERT statement. A multi-row VALUES costs far less per row than one
#: statement per row (an executemany of single rows, even pipelined), but its text
#: must stay short enough for drivers to cache its parsing (psycopg: 4 KiB) and,
#: being always the same, PostgreSQL prepares it. ``benchmarks/seal_throughput.py``.
ROWS_PER_INSERT = 64


def _bound(rows: list[tuple[int, int, str, int, str]]) -> dict[str, Any]:
    """The parameters of :func:`_insert_of` for ``rows``."""
    params: dict[str, Any] = {}
    for n, (seq, position, job_id, version, digest) in enumerate(rows):
        params[f"s{n}"], params[f"p{n}"], params[f"j{n}"] = seq, position, job_id
        params[f"v{n}"], params[f"d{n}"] = version, digest
    return params


@functools.lru_cache(maxsize=ROWS_PER_INSERT + 1)
def _insert_of(rows: int) -> TextClause:
    """One INSERT of ``rows`` anchor rows, bound by name (``s0, p0, j0, v0, d0, s1, ...``)."""
    columns = ", ".join(c.name for c in anchor.columns)
    values = ",".join(f"(:s{n},:p{n},:j{n},:v{n},:d{n})" for n in range(rows))
    return text(f"INSERT INTO {anchor.name} ({columns}) VALUES {values}")


class Sealer(Runner):
    """Seals every committed event into the anchor; run it beside the recovery projector.

    A :class:`~jobledger.runner.Runner`: :meth:`run_forever` polls every
    ``interval`` seconds when idle and retries with a growing delay after an
    error (the database unreachable, the anchor's table not migrated yet).
    """

    def __init__(
        self,
        source: Ledger | Engine,
        *,
        interval: float = 1.0,
        batch_size: int = BATCH_SIZE,
        handle_signals: bool | None = False,
    ) -> None:
        super().__init__(handle_signals=handle_signals)
        self.projection = Anchor()
        self.catchup = CatchUp(source, self.projection, batch_size=batch_size)
        self.interval = interval
        self._delay = interval

    def __str__(self) -> str:
        return "sealer"

    @property
    def sealed(self) -> int:
        """Events sealed since this sealer started."""
        return self.projection.sealed

    def run_once(self) -> int:
        """Seal every event that can be sealed now; how many were."""
        return self.catchup.run_once()

    def _starting(self) -> None:
        self._delay = self.interval

    def _round(self) -> float:
        try:
            if self.run_once() > 0:
                return 0.0  # more may have come meanwhile
            self._delay = self.interval
        except LedgerError as exc:  # unreachable, not migrated yet: say so, keep trying
            self._delay = min(max(self._delay * 2, 1.0), MAX_BACKOFF)
            log.error("sealing stopped; retrying in %.1fs: %s", self._delay, exc)
        return self._delay
