"""Prophesee EVT 2.0 ``.raw`` files, decoded here: by a numba kernel (``native.evt2``) where numba
is installed, else vectorised with numpy (the reference).

After the ``%`` header come little-endian 32-bit words; the top 4 bits give the type:
CD_OFF (0x0) and CD_ON (0x1) carry the 6 low bits of the time (bits 27-22), x (21-11) and
y (10-0); TIME_HIGH (0x8) carries the 28 high bits of a 34-bit microsecond time, which wraps
around (unwrapped here); EXT_TRIGGER (0xA), OTHERS (0xE) and CONTINUED (0xF) are skipped.
CD events before the first TIME_HIGH have no time and are skipped, as Prophesee's decoder does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from spikeshot.events.array import EVENT_DTYPE, empty
from spikeshot.events.prophesee import Header, carried, open_evt, unwrap
from spikeshot.events.recording import (
    EventSource,
    FormatError,
    Recording,
    check_inside,
    collect,
    kernels,
    limits,
    read_records,
    rechunk,
)

_KNOWN = np.zeros(16, dtype=bool)
_KNOWN[[0x0, 0x1, 0x8, 0xA, 0xE, 0xF]] = True
_TIME_HIGH = 0x8


class _Decoder:
    """Decodes consecutive blocks of words, carrying the time base from one block to the next:
    with the kernel ``native.evt2`` where numba is installed (``native`` true), else with the
    numpy reference ``reference``."""

    def __init__(self, path, sensor: tuple[int, int] | None, native: bool = True):
        self.path, self.sensor = path, sensor
        self.time_high = -1  # unwrapped, -1 before the first TIME_HIGH
        self.kernels = kernels() if native else None

    def decode(self, offset: int, data: bytes) -> np.ndarray:
        if self.kernels is None:
            return self.reference(offset, data)
        words = np.frombuffer(data, dtype="<u4")
        events = np.empty(len(words), dtype=EVENT_DTYPE)
        sensor = limits(self.sensor)
        n, ok, self.time_high = self.kernels.evt2(words, self.time_high, *sensor, events)
        if not ok:  # state unchanged: the reference raises the error
            return self.reference(offset, data)
        return events[:n]

    def reference(self, offset: int, data: bytes) -> np.ndarray:
        words = np.frombuffer(data, dtype="<u4")
        kind = (words >> 28).astype(np.uint8)
        unknown = ~_KNOWN[kind]
        pending = None  # an unknown word's error, raised after those of the words before it
        if unknown.any():
            i = int(np.argmax(unknown))
            pending = FormatError(
                self.path, offset + 4 * i, f"unknown EVT 2.0 word type 0x{kind[i]:X}"
            )
            words, kind = words[:i], kind[:i]
        highs = np.flatnonzero(kind == _TIME_HIGH)
        values = unwrap((words[highs] & 0x0FFFFFFF).astype(np.int64), self.time_high, 28)
        rows = np.flatnonzero(kind <= 0x1)
        high = carried(highs, values, rows, self.time_high)
        if len(highs):
            self.time_high = int(values[-1])
        rows, high = rows[high >= 0], high[high >= 0]
        cd_words = words[rows]
        events = empty(len(rows))
        events["t"] = (high << 6) | ((cd_words >> 22) & 0x3F)
        events["x"] = (cd_words >> 11) & 0x7FF
        events["y"] = cd_words & 0x7FF
        events["p"] = kind[rows]
        if self.sensor is not None:
            check_inside(self.path, events, offset + 4 * rows, self.sensor)
        if pending is not None:
            raise pending
        return events


def _blocks(stream, decoder: _Decoder, start: int, block_events: int) -> Iterator[np.ndarray]:
    with stream:
        for offset, data in read_records(stream, decoder.path, start, 4, block_events, "word"):
            yield decoder.decode(offset, data)


def source(
    path,
    block_events: int = 1 << 20,
    native: bool = True,
    stream: BinaryIO | None = None,
    header: Header | None = None,
) -> EventSource:
    """Open an EVT 2.0 file: its header's sensor size and its events in blocks of at most
    ``block_events``; ``native=False`` decodes with numpy only. ``stream``: ``path`` already
    open (see ``prophesee.open_header``, with ``header``), which the source takes over."""
    stream, header, sensor = open_evt(path, "2.0", stream, header)
    blocks = _blocks(stream, _Decoder(path, sensor, native), header.size, block_events)
    return EventSource("evt2", blocks, sensor, header.camera_size())


def read(path) -> Recording:
    """The whole EVT 2.0 file."""
    return collect(source(path))


def iter_chunks(path, chunk_events: int = 1_000_000) -> Iterator[np.ndarray]:
    """The file's events in arrays of ``chunk_events`` (the last may be shorter)."""
    return rechunk(source(path, chunk_events).blocks, chunk_events)
