"""glibc's allocator in a long-running server: capping its malloc arenas, and handing the free
pages of its heap back to the system.

glibc gives each new thread that allocates an arena of its own, up to eight per core, and each
arena keeps the memory freed into it. ``bench/soak.py`` measured 1.09-1.15x the first minute's
resident memory uncapped, 0.97x with ``MALLOC_ARENA_MAX=2``, and 1.05x with this cap at two (a
higher plateau, at more calls a minute: not settled, see the README). The cap has to be set
before most threads have allocated: glibc fixes its limit once more than eight arenas exist.

Freed memory stays resident where live blocks sit among it (glibc returns only the top of a heap
by itself): after 1,000 Adapts, 1,000 sessions held 2.8x the state they hold alone, the rest the
inner loop's freed temporaries, and 1.2x after ``malloc_trim`` (``bench/service.py``, the
mid-width model). ``Trimmer`` calls it after model work, at most once an interval.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from functools import cache

ENV = "MALLOC_ARENA_MAX"  # glibc's own variable; where it is set, it wins
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


@cache
def _glibc():
    """The C library where it is glibc, else None (musl's mallopt and friends do nothing)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def trim() -> bool:
    """Hand the free pages of every malloc arena back to the system (glibc's ``malloc_trim``);
    True when some were. False, and nothing happens, elsewhere."""
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0))


class Trimmer:
    """``trim`` when called, at most once every ``interval_s`` seconds (never when 0): called by
    the model executor after each job, it keeps the heap's resident size near what is live for a
    few milliseconds a second (0.2-5 ms a trim, measured on a 400 MB heap)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s, self._clock = interval_s, clock
        self._due = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if not self.interval_s:
            return
        with self._lock:
            now = self._clock()
            if now < self._due:
                return
            self._due = now + self.interval_s
        trim()


def cap_arenas(arenas: int) -> bool:
    """Let this process use at most ``arenas`` malloc arenas (the main one included); True when
    the cap is set. False, and nothing changes, where ``MALLOC_ARENA_MAX`` is set or the C
    library is not glibc."""
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    libc = _glibc()
    if os.environ.get(ENV) or libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(_M_ARENA_MAX, arenas) == 1
