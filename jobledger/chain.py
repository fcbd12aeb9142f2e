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
    """:func:`event_hash` with ``recorded_at`` already in its canonical text form."""
    return encoded_chain_hash(
        prev_hash,
        canonical_string(job_id),
        version,
        canonical_string(type),
        "null" if process is None else canonical_string(process),
        canonical_json(data),
        recorded_at,
    )


def encoded_chain_hash(
    prev_hash: str,
    job_json: str,
    version: int,
    type_json: str,
    process_json: str,
    data_json: str,
    recorded_at: str,
) -> str:
    """:func:`chain_hash` of members already in canonical JSON (strings quoted, ``null``).

    The body is ``canonical_json`` of the six-key object, written out in its
    (sorted) key order directly: verify and export hash every stored event, and
    building and sorting a dict per event would cost more than the hash itself.
    Verify also reuses the encoded job id and payloads across events.
    ``version`` is an exact ``int`` (a column's value, or one added to it): it is
    written as ``str`` writes it, which a format spec would only slow down.

    ``surrogatepass``: no stored event can hold a lone surrogate (payloads are
    refused before writing), so one in a tampered row must yield a mismatching
    hash, not an exception that stops the audit. Valid text encodes identically.
    """
    return _sha256(
        f'{prev_hash}\n{{"data":{data_json},"job_id":{job_json},"process":{process_json},'
        f'"recorded_at":"{recorded_at}","type":{type_json},"version":{version}}}'.encode(
            "utf-8", "surrogatepass"
        )
    ).hexdigest()


#: What verify and verify_export report for an event whose hash is not its contents'.
BAD_HASH = "stored hash does not match the event's contents"


def broken_link(expected_version: int, expected_prev: str, version: int, prev_hash: str) -> str:
    """Why a job's event does not follow the one before it, in the audit's words.

    The event follows when ``version`` is ``expected_version`` (1 for a job's
    first event) and its ``prev_hash`` is ``expected_prev``, the previous
    event's hash (:data:`GENESIS` for the first); callers check that equality
    themselves (verify does, once per event) and call this to explain a mismatch.
    """
    if version != expected_version:
        return f"expected version {expected_version}: events are missing or out of order"
    previous = "GENESIS" if expected_version == 1 else f"version {expected_version - 1}'s hash"
    return f"prev_hash is not {previous}: the chain is broken"
