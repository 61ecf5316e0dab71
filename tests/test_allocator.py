"""The malloc arena cap of ``spikeshot serve``: counted by glibc itself, in a fresh process."""

import os
import platform
import subprocess
import sys

import pytest

from spikeshot.service.allocator import cap_arenas
from spikeshot.service.config import ServerConfig

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the arena cap is glibc's"
)

# Eight threads allocate at once; glibc's malloc_stats then prints one "Arena N:" block per arena.
ARENAS_AFTER_THREADS = """
import ctypes, sys, threading
from spikeshot.service.allocator import cap_arenas
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_void_p,)
capped = cap_arenas({cap}) if {cap} else False
start = threading.Barrier(8)
def allocate():
    start.wait()
    libc.free(libc.malloc(4096))
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
sys.stderr.flush()
print(capped, flush=True)
libc.malloc_stats()
"""


def arenas_after_threads(cap: int, environ: dict[str, str] | None = None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | (environ or {})
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_AFTER_THREADS.format(cap=cap)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


def test_the_cap_bounds_the_arenas_that_threads_make():
    assert arenas_after_threads(0)[1] > 3  # uncapped, the threads make arenas of their own
    assert arenas_after_threads(2) == ("True", 2)


def test_the_environment_variable_wins():
    capped, arenas = arenas_after_threads(2, {"MALLOC_ARENA_MAX": "3"})
    assert capped == "False" and arenas == 3


def test_a_cap_below_one_is_an_error():
    with pytest.raises(ValueError, match="arenas must be >= 1, got 0"):
        cap_arenas(0)
    with pytest.raises(ValueError, match="malloc_arenas must be >= 0, got -1"):
        ServerConfig(malloc_arenas=-1)
    assert ServerConfig(malloc_arenas=0).malloc_arena_count >= 1
    assert ServerConfig(malloc_arenas=5).malloc_arena_count == 5
