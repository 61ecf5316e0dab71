"""glibc's allocator in ``spikeshot serve``: the arena cap, counted by glibc itself in a fresh
process, and the trim of the heap's free pages after model work."""

import os
import platform
import subprocess
import sys

import pytest

from spikeshot.service import allocator
from spikeshot.service.allocator import Trimmer, cap_arenas
from spikeshot.service.config import ServerConfig
from spikeshot.service.executor import Executor

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


# 80 MB of heap blocks, touched, then all freed but every 100th: the live ones pin the heap's top.
RESIDENT_AFTER_TRIM = """
import ctypes
from spikeshot.service.allocator import trim
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
def resident_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
blocks = [libc.malloc(16384) for _ in range(5000)]
for b in blocks:
    libc.memset(b, 1, 16384)
for i, b in enumerate(blocks):
    if i % 100:
        libc.free(b)
before = resident_mib()
print(trim(), before - resident_mib())
"""


def test_trim_hands_the_free_pages_among_live_blocks_back():
    done = subprocess.run(
        [sys.executable, "-c", RESIDENT_AFTER_TRIM],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    trimmed, freed_mib = done.stdout.split()
    assert trimmed == "True" and float(freed_mib) > 50


def test_the_trimmer_trims_at_most_once_an_interval(monkeypatch):
    trims, now = [], [100.0]
    monkeypatch.setattr(allocator, "trim", lambda: trims.append(now[0]))
    trimmer = Trimmer(1.0, clock=lambda: now[0])
    for t in (100.0, 100.5, 100.99, 101.0, 101.2, 103.0):
        now[0] = t
        trimmer()
    assert trims == [100.0, 101.0, 103.0]
    Trimmer(0)()
    assert len(trims) == 3  # never
    with pytest.raises(ValueError, match="interval_s must be >= 0, got -1"):
        Trimmer(-1)
    with pytest.raises(ValueError, match="malloc_trim_s must be >= 0, got -0.5"):
        ServerConfig(malloc_trim_s=-0.5)


def test_the_executor_calls_its_after_job_hook_after_each_job():
    calls = []
    executor = Executor(1, 1, after_job=lambda: calls.append("after"))
    try:
        results = [executor.run(lambda k=k: calls.append(k) or k)[0] for k in range(3)]
    finally:
        executor.close()
    assert results == [0, 1, 2] and calls == [0, "after", 1, "after", 2, "after"]
