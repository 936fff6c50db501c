"""A scoring worker never outlives the process that started it, even one killed with SIGKILL.

On Linux the kernel sends the worker SIGKILL when its parent dies (``PR_SET_PDEATHSIG``, armed
through ``prctl`` with ctypes); everywhere, a watchdog thread exits it once its parent pid
changes. ``PR_SET_PDEATHSIG`` follows the *thread* that started the worker, so workers must be
started from a thread that lives as long as the process (the event loop's, the main thread).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 0.5
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Exit this process when ``parent`` dies: PR_SET_PDEATHSIG on Linux, a watchdog anywhere."""
    if sys.platform.startswith("linux"):
        _set_pdeathsig()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    watchdog = threading.Thread(
        target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True
    )
    watchdog.start()


def _set_pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError) as exc:  # no prctl: the watchdog still works
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCHDOG_INTERVAL_S)
    os._exit(1)
