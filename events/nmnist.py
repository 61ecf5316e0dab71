"""N-MNIST ``.bin`` files (also N-Caltech101's), written vectorised here and decoded by a numba
kernel (``native.nmnist``) where numba is installed, else vectorised with numpy (the reference).

Each event is 5 bytes: x, y, then the polarity (bit 7 of byte 2, 1 = ON) and a 23-bit
microsecond time (bits 6-0 of byte 2, bytes 3 and 4, big-endian). A record with y = 240 is not an
event but marks that the 23-bit time wrapped around: every later time is 2**23 us later. (tonic's
reader, after the dataset's MATLAB one, adds 2**13 there, which does not match a 23-bit counter;
N-MNIST's 0.3 s recordings hold no marker, so the two rules agree on its files.)

Sensor size: N-MNIST's 34x34 when every event fits, else the largest coordinate plus one.
The camera writes events in time order, so a time that goes back is reported as corruption.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from spikeshot.events.array import EVENT_DTYPE, Limits, as_events, empty, validate
from spikeshot.events.recording import (
    EventSource,
    FormatError,
    Recording,
    collect,
    kernels,
    read_records,
    rechunk,
)

SIZE = (34, 34)
_MARKER_Y = 240
_WRAP = 1 << 23


class _Decoder:
    """Decodes consecutive blocks of records, carrying the wrap count and the last time: with the
    kernel ``native.nmnist`` where numba is installed (``native`` true), else with the numpy
    reference ``reference``."""

    def __init__(self, path, native: bool = True):
        self.path = path
        self.wraps = 0
        self.t = -1
        self.kernels = kernels() if native else None

    def decode(self, offset: int, data: bytes) -> np.ndarray:
        if self.kernels is None:
            return self.reference(offset, data)
        records = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5)
        events = np.empty(len(records), dtype=EVENT_DTYPE)
        n, ok, (self.wraps, self.t) = self.kernels.nmnist(records, (self.wraps, self.t), events)
        if not ok:  # state unchanged: the reference raises the error
            return self.reference(offset, data)
        return events[:n]

    def reference(self, offset: int, data: bytes) -> np.ndarray:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5)
        marker = raw[:, 1] == _MARKER_Y
        wraps = self.wraps + np.cumsum(marker)
        self.wraps = int(wraps[-1]) if len(wraps) else self.wraps
        keep = np.flatnonzero(~marker)
        rec = raw[keep].astype(np.int64)
        t = ((rec[:, 2] & 0x7F) << 16 | rec[:, 3] << 8 | rec[:, 4]) + wraps[keep] * _WRAP
        back = np.diff(t, prepend=max(self.t, 0)) < 0
        if back.any():
            i = int(np.argmax(back))
            raise FormatError(
                self.path,
                offset + 5 * int(keep[i]),
                f"time goes back to {t[i]} us after {t[i - 1] if i else self.t} us: corrupt event",
            )
        events = empty(len(rec))
        events["t"] = t
        events["x"] = rec[:, 0]
        events["y"] = rec[:, 1]
        events["p"] = rec[:, 2] >> 7
        if len(t):
            self.t = int(t[-1])
        return events


def _blocks(stream, decoder: _Decoder, block_events: int) -> Iterator[np.ndarray]:
    with stream:
        for offset, data in read_records(stream, decoder.path, 0, 5, block_events, "event"):
            yield decoder.decode(offset, data)


def source(
    path, block_events: int = 1 << 20, native: bool = True, stream: BinaryIO | None = None
) -> EventSource:
    """Open an N-MNIST file: its events in blocks of at most ``block_events``; ``native=False``
    decodes with numpy only. ``stream``: ``path`` already open at its first byte, which the
    source takes over."""
    stream = stream or open(path, "rb")  # closed by the block generator
    blocks = _blocks(stream, _Decoder(path, native), block_events)
    return EventSource("nmnist", blocks, nominal=SIZE)


def read(path) -> Recording:
    """The whole N-MNIST file."""
    return collect(source(path))


def iter_chunks(path, chunk_events: int = 1_000_000) -> Iterator[np.ndarray]:
    """The file's events in arrays of ``chunk_events`` (the last may be shorter)."""
    return rechunk(source(path, chunk_events).blocks, chunk_events)


def encode(events: np.ndarray, width: int = SIZE[0], height: int = SIZE[1]) -> bytes:
    """The N-MNIST bytes of ``events`` (time-ordered, t >= 0, x < width <= 256,
    y < height <= 240), with a wrap marker before each event whose time passes a multiple of
    2**23 us."""
    if not (0 < width <= 256 and 0 < height <= _MARKER_Y):
        raise ValueError(f"N-MNIST holds sensors up to 256x240, not {width}x{height}")
    events = validate(as_events(events), Limits(width, height, allow_empty=True))
    if len(events) and events["t"][0] < 0:
        raise ValueError(f"N-MNIST times start at 0 us, got {events['t'][0]}")
    t = events["t"]
    wraps = t // _WRAP
    rows = np.diff(wraps, prepend=0) + 1  # markers before each event, then the event
    at = np.cumsum(rows) - 1
    out = np.zeros((int(rows.sum()), 5), dtype=np.uint8)
    out[:, 1] = _MARKER_Y
    low = t - wraps * _WRAP
    out[at, 0] = events["x"]
    out[at, 1] = events["y"]
    out[at, 2] = (events["p"].astype(np.int64) << 7) | (low >> 16)
    out[at, 3] = (low >> 8) & 0xFF
    out[at, 4] = low & 0xFF
    return out.tobytes()


def write(path, events: np.ndarray, width: int = SIZE[0], height: int = SIZE[1]) -> None:
    """Write ``events`` as an N-MNIST file (see ``encode``)."""
    Path(path).write_bytes(encode(events, width, height))
