"""The per-job hash chain that makes edited, deleted or reordered events detectable.

``hash = sha256(prev_hash + "\\n" + canonical_json(event))`` where ``event`` is
the object ``{data, job_id, process, recorded_at, type, version}`` and the first
event of a job chains from :data:`GENESIS`. See README.md, "Hash chain".
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from .encoding import JSONValue, canonical_json, canonical_string, canonical_time

#: ``prev_hash`` of every job's first event.
GENESIS = "0" * 64

_sha256 = hashlib.sha256


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
    return chain_hash(prev_hash, job_id, version, type, process, data, canonical_time(recorded_at))


def chain_hash(
    prev_hash: str,
    job_id: str,
    version: int,
    type: str,
    process: str | None,
    data: JSONValue,
    recorded_at: str,
) -> str:
    """:func:`event_hash` with ``recorded_at`` already in its canonical text form.

    The body is ``canonical_json`` of the six-key object, written out in its
    (sorted) key order directly: verify and export hash every stored event, and
    building and sorting a dict per event would cost more than the hash itself.
    """
    body = (
        f'{{"data":{canonical_json(data)},"job_id":{canonical_string(job_id)},'
        f'"process":{"null" if process is None else canonical_string(process)},'
        f'"recorded_at":"{recorded_at}","type":{canonical_string(type)},"version":{version:d}}}'
    )
    return _sha256(f"{prev_hash}\n{body}".encode()).hexdigest()
