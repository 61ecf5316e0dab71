"""Helpers of the client tests: quadrant event sequences for the tiny model of
``service_fixtures``, and a fake live camera, a child process that serves events with
dv-processing's ``NetworkWriter`` as DV software or a camera process does."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from service_fixtures import events

SIZE = 16  # the tiny model's sensor: quadrant i of it is class i

FAKE_CAMERA = textwrap.dedent(
    """
    import math, os, sys, time
    import numpy as np
    import dv_processing as dv

    kind, address, path, width, height, mode = sys.argv[1:]
    events = np.load(path)
    stream = dv.io.Stream.EventStream(0, "events", "FakeCamera", (int(width), int(height)))
    if kind == "tcp":
        writer = dv.io.NetworkWriter("127.0.0.1", int(address), stream)
    else:
        writer = dv.io.NetworkWriter(dv.Path(address), stream)
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while mode == "once" and writer.getClientCount() < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    t = events["t"]
    block_us, t0 = 2000, int(t[0])
    duration = int(t[-1]) - t0 + 1
    blocks = math.ceil(duration / block_us)
    start, offset = time.monotonic(), 0
    for _ in range(1 if mode == "once" else 10_000):
        for k in range(blocks):
            due = start + (offset + (k + 1) * block_us) / 1e6
            time.sleep(max(0.0, due - time.monotonic()))
            lo, hi = np.searchsorted(t, [t0 + k * block_us, t0 + (k + 1) * block_us])
            store = dv.EventStore()
            for e in events[lo:hi].tolist():
                store.push_back(e[0] + offset, e[1], e[2], bool(e[3]))
            if store.size():
                writer.writeEvents(store)
        offset += blocks * block_us
    deadline = time.monotonic() + 5
    while writer.getQueuedPacketCount() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)
    os._exit(0)  # the writer's destructor waits for its clients to leave
    """
)


def sequence(classes: list[int], seed: int = 0, window_us: int = 4000) -> np.ndarray:
    """One window of quadrant events per entry of ``classes``, back to back from t = 0."""
    parts = [
        events(c, seed + i, t0=i * window_us, duration_us=window_us) for i, c in enumerate(classes)
    ]
    for i, part in enumerate(parts):
        part["t"][0] = i * window_us  # each window starts with an event on its boundary
    return np.concatenate(parts)


@contextlib.contextmanager
def fake_camera(
    folder: Path,
    ev: np.ndarray,
    *,
    port: int | None = None,
    socket_path: str | None = None,
    loop: bool = False,
    size: int = SIZE,
):
    """A child process serving ``ev`` at its recorded pace on TCP ``port`` (or a Unix socket):
    once, after the first client connects, then exits; or over and over while ``loop``."""
    path = folder / "camera_events.npy"
    np.save(path, ev)
    kind, address = ("tcp", str(port)) if socket_path is None else ("unix", socket_path)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FAKE_CAMERA,
            kind,
            address,
            str(path),
            str(size),
            str(size),
            "loop" if loop else "once",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready", "the fake camera did not start"
        yield child
    finally:
        child.kill()
        child.wait()
