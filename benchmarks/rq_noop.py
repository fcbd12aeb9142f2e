"""The trivial RQ job of ``rq_overhead.py``, in a module of its own.

The work horse imports the job's module; this one imports nothing, so neither
side pays for imports the other has already made in the parent worker.
"""


def nothing() -> None:
    """Do nothing."""
