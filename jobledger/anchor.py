"""The ledger-wide anchor's chain: one link per sealed event, in commit order.

``digest = sha256(previous digest + "\\n" + canonical_json(link))`` where
``link`` is the object ``{hash, job_id, position, seq, version}`` of the sealed
event (``hash`` is its per-job chain hash, :mod:`jobledger.chain`) and the
first link chains from :data:`GENESIS`. ``seq`` counts the links 1, 2, 3 ...;
the last link's ``seq`` and ``digest`` are the *head* an auditor keeps
(:class:`Head`). See README.md, "Ledger-wide anchor".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from . import chain
from .encoding import canonical_string
from .errors import InvalidHead

#: The digest the first link chains from: 64 zeros, as a job's first event's ``prev_hash``.
GENESIS = chain.GENESIS
#: The anchor's catch-up projection name: its checkpoint row's key.
NAME = "anchor"

_sha256 = hashlib.sha256
_HEAD = re.compile(r"([1-9][0-9]{0,18}):([0-9a-f]{64})")


def link_digest(
    previous: str, seq: int, position: int, job_id: str, version: int, hash_: str
) -> str:
    """Hex SHA-256 of one sealed event chained to the link before it."""
    return encoded_link_digest(previous, seq, position, canonical_string(job_id), version, hash_)


def encoded_link_digest(
    previous: str, seq: int, position: int, job_json: str, version: int, hash_: str
) -> str:
    """:func:`link_digest` with the job id already in canonical JSON (quoted, escaped).

    The object is written in its (sorted) key order directly, as the event hash
    is (:func:`jobledger.chain.encoded_chain_hash`); ``surrogatepass`` so that a
    tampered job id yields a mismatch rather than an exception. The numbers are
    exact ``int`` values (columns' values), written as ``str`` writes them.
    """
    return _sha256(
        f'{previous}\n{{"hash":{canonical_string(hash_)},"job_id":{job_json},'
        f'"position":{position},"seq":{seq},"version":{version}}}'.encode("utf-8", "surrogatepass")
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    """A published anchor link: history up to ``seq`` hashes to ``digest``."""

    seq: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """``SEQ:DIGEST`` as ``jobledger head`` prints it; :class:`InvalidHead` otherwise."""
        match = _HEAD.fullmatch(text.strip())
        if match is None:
            raise InvalidHead(
                "a head is SEQ:DIGEST, a positive integer and 64 lowercase hex digits "
                "(as `jobledger head` prints it)"
            )
        return cls(int(match[1]), match[2])

    def __str__(self) -> str:
        return f"{self.seq}:{self.digest}"
