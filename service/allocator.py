"""Capping glibc's malloc arenas of a long-running server.

glibc gives each new thread that allocates an arena of its own, up to eight per core, and each
arena keeps the memory freed into it. ``bench/soak.py`` measured 1.09-1.15x the first minute's
resident memory uncapped, 0.97x with ``MALLOC_ARENA_MAX=2``, and 1.05x with this cap at two (a
higher plateau, at more calls a minute: not settled, see the README). The cap has to be set
before most threads have allocated: glibc fixes its limit once more than eight arenas exist.
"""

from __future__ import annotations

import ctypes
import os

ENV = "MALLOC_ARENA_MAX"  # glibc's own variable; where it is set, it wins
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def cap_arenas(arenas: int) -> bool:
    """Let this process use at most ``arenas`` malloc arenas (the main one included); True when
    the cap is set. False, and nothing changes, where ``MALLOC_ARENA_MAX`` is set or the C
    library is not glibc."""
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    if os.environ.get(ENV):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it; musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(_M_ARENA_MAX, arenas) == 1
