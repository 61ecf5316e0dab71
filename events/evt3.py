"""Prophesee EVT 3.0 ``.raw`` files, decoded here from files or pipes, in blocks of bounded size,
with byte offsets in errors: by a numba kernel (``native.evt3``) where numba is installed, else
vectorised with numpy (the reference). On a real Gen4.1 recording it gives exactly what the
``evt3`` package (Rust) gives.

After the ``%`` header come little-endian 16-bit words; the top 4 bits give the type:
ADDR_Y (0x0) sets y; ADDR_X (0x2) is one event at x (bits 10-0) with polarity bit 11;
VECT_BASE_X (0x3) sets the x and polarity of the vectors that follow; VECT_12 (0x4) and VECT_8
(0x5) are bit masks of events at x, x+1, ... after which x advances by 12 or 8; TIME_LOW (0x6)
and TIME_HIGH (0x8) set the low and high 12 bits of a 24-bit microsecond time that wraps around
(unwrapped here); CONTINUED_4 (0x7), EXT_TRIGGER (0xA), OTHERS (0xE) and CONTINUED_12 (0xF) are
skipped. Events before the first TIME_HIGH, ADDR_Y or VECT_BASE_X they need are skipped, as
Prophesee's decoder does.
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
_KNOWN[[0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF]] = True
_ADDR_Y, _ADDR_X, _VECT_BASE_X, _VECT_12, _VECT_8, _TIME_LOW, _TIME_HIGH = 0, 2, 3, 4, 5, 6, 8
_UNKNOWN_X = -(1 << 40)  # stays negative after any number of vector steps
_POPCOUNT = np.array([bin(m).count("1") for m in range(1 << 12)], dtype=np.int64)


class _Decoder:
    """Decodes consecutive blocks of words, carrying time, row and vector state across blocks:
    with the kernel ``native.evt3`` where numba is installed (``native`` true), else with the
    numpy reference ``reference``."""

    def __init__(self, path, sensor: tuple[int, int] | None, native: bool = True):
        self.path, self.sensor = path, sensor
        # The unwrapped TIME_HIGH (-1 before the first), TIME_LOW, y, the x of the next vector
        # event and its polarity.
        self.state = (-1, 0, -1, _UNKNOWN_X, 0)
        self.kernels = kernels() if native else None

    def decode(self, offset: int, data: bytes) -> np.ndarray:
        if self.kernels is None:
            return self.reference(offset, data)
        words = np.frombuffer(data, dtype="<u2")
        events = np.empty(self.kernels.evt3_bound(words) + 1, dtype=EVENT_DTYPE)
        n, ok, self.state = self.kernels.evt3(words, self.state, *limits(self.sensor), events)
        if not ok:  # state unchanged: the reference raises the error
            return self.reference(offset, data)
        return events[:n]

    def reference(self, offset: int, data: bytes) -> np.ndarray:
        words = np.frombuffer(data, dtype="<u2")
        if not len(words):
            return empty()
        time_high, time_low, y_in, x_next, polarity_in = self.state
        kind = words >> 12
        unknown = ~_KNOWN[kind]
        pending = None  # an unknown word's error, raised after those of the words before it
        if unknown.any():
            i = int(np.argmax(unknown))
            pending = FormatError(
                self.path, offset + 2 * i, f"unknown EVT 3.0 word type 0x{kind[i]:X}"
            )
            if not i:
                raise pending
            words, kind = words[:i], kind[:i]
        low11, bit11 = (words & 0x7FF).astype(np.int64), (words >> 11) & 1
        single, vector = kind == _ADDR_X, (kind == _VECT_12) | (kind == _VECT_8)
        rows = np.flatnonzero(single | vector)  # the words that hold events

        # Time: TIME_HIGH sets the high bits; like Prophesee's decoder, one that changes them
        # zeroes the low bits, which TIME_LOW sets.
        highs = np.flatnonzero(kind == _TIME_HIGH)
        high_values = unwrap((words[highs] & 0xFFF).astype(np.int64), time_high, 12)
        sets_low = kind == _TIME_LOW
        sets_low[highs[np.diff(high_values, prepend=time_high) != 0]] = True
        lows = np.flatnonzero(sets_low)
        low_values = np.where(kind[lows] == _TIME_LOW, words[lows] & 0xFFF, 0)
        high = carried(highs, high_values, rows, time_high)
        t = (high << 12) | carried(lows, low_values, rows, time_low)
        ys = np.flatnonzero(kind == _ADDR_Y)
        y = carried(ys, low11[ys], rows, y_in)

        # Vectors: x starts at the last VECT_BASE_X and advances 12 or 8 per vector word.
        vectors = np.flatnonzero(vector)
        advanced = np.concatenate(([0], np.cumsum(np.where(kind[vectors] == _VECT_12, 12, 8))))
        bases = np.flatnonzero(kind == _VECT_BASE_X)
        origin = low11[bases] - advanced[np.searchsorted(vectors, bases)]  # x at the block start
        vector_x = carried(bases, origin, rows, x_next)
        vector_x += advanced[np.searchsorted(vectors, rows)]
        vector_polarity = carried(bases, bit11[bases], rows, polarity_in)
        x = np.where(single[rows], low11[rows], vector_x)
        polarity = np.where(single[rows], bit11[rows], vector_polarity)

        end = np.array([len(words) - 1])
        self.state = (
            int(carried(highs, high_values, end, time_high)[0]),
            int(carried(lows, low_values, end, time_low)[0]),
            int(carried(ys, low11[ys], end, y_in)[0]),
            int(carried(bases, origin, end, x_next)[0] + advanced[-1]),
            int(carried(bases, bit11[bases], end, polarity_in)[0]),
        )

        keep = (high >= 0) & (y >= 0) & (x >= 0)
        rows, t, y, x, polarity = rows[keep], t[keep], y[keep], x[keep], polarity[keep]
        is_single = single[rows]
        mask = np.where(is_single, 1, words[rows] & np.where(kind[rows] == _VECT_12, 0xFFF, 0xFF))
        count = _POPCOUNT[mask]
        first = np.cumsum(count) - count  # each row's first event
        row = np.repeat(np.arange(len(rows)), count)
        column = np.zeros(len(row), dtype=np.int64)
        vector_rows = np.flatnonzero(~is_single)
        if len(vector_rows):
            bits = np.unpackbits(
                mask[vector_rows].astype("<u2").view(np.uint8).reshape(-1, 2),
                axis=1,
                bitorder="little",
            )
            which, bit = np.nonzero(bits[:, :12])
            n = count[vector_rows]
            rank = np.arange(len(which)) - (np.cumsum(n) - n)[which]
            column[first[vector_rows][which] + rank] = bit
        events = empty(len(row))
        events["t"] = t[row]
        events["x"] = x[row] + column
        events["y"] = y[row]
        events["p"] = polarity[row]
        if self.sensor is not None:
            check_inside(self.path, events, offset + 2 * rows[row], self.sensor)
        if pending is not None:
            raise pending
        return events


def _blocks(stream, decoder: _Decoder, start: int, block_events: int) -> Iterator[np.ndarray]:
    with stream:
        for offset, data in read_records(stream, decoder.path, start, 2, block_events, "word"):
            yield decoder.decode(offset, data)


def source(
    path,
    block_events: int = 1 << 20,
    native: bool = True,
    stream: BinaryIO | None = None,
    header: Header | None = None,
) -> EventSource:
    """Open an EVT 3.0 file: its header's sensor size and its events in blocks of
    ``block_events`` words (at most 12 events each); ``native=False`` decodes with numpy only.
    ``stream``: ``path`` already open (see ``prophesee.open_header``, with ``header``), which the
    source takes over."""
    stream, header, sensor = open_evt(path, "3.0", stream, header)
    blocks = _blocks(stream, _Decoder(path, sensor, native), header.size, block_events)
    return EventSource("evt3", blocks, sensor, header.camera_size())


def read(path) -> Recording:
    """The whole EVT 3.0 file."""
    return collect(source(path))


def iter_chunks(path, chunk_events: int = 1_000_000) -> Iterator[np.ndarray]:
    """The file's events in arrays of ``chunk_events`` (the last may be shorter)."""
    return rechunk(source(path, chunk_events).blocks, chunk_events)
