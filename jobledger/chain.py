"""The per-job hash chain that makes edited, deleted or reordered events detectable.

``hash = sha256(prev_hash + "\\n" + canonical_json(event))`` where ``event`` is
the object ``{data, job_id, process, recorded_at, type, version}`` and the first
event of a job chains from :data:`GENESIS`. See README.md, "Hash chain".
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from .encoding import JSONValue, canonical_json, canonical_time

#: ``prev_hash`` of every job's first event.
GENESIS = "0" * 64


def event_hash(
    prev_hash: str,
    job_id: str,
    version: int,
    type: str,
    process: str | None,
    data: JSONValue,
    recorded_at: datetime,
) -> str:
    """Hex SHA-256 of an event chained to its predecessor."""
    body = canonical_json(
        {
            "data": data,
            "job_id": job_id,
            "process": process,
            "recorded_at": canonical_time(recorded_at),
            "type": type,
            "version": version,
        }
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()
