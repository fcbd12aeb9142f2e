"""Forked children that must not outlive the process that forked them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: Linux's prctl option: a signal this process gets when its parent ends.
PR_SET_PDEATHSIG = 1

# Looked up once, in the parent: loading the library in each fresh child costs it a millisecond.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this (freshly forked) process when ``parent`` ends.

    The signal fires when the *thread* that forked ends, so fork from the
    parent's main thread. Where there is no such signal (not Linux), only the
    check below runs. If ``parent`` is already gone, this process exits at once.
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above could take effect
        os._exit(1)
