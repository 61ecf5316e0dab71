"""Prophesee DAT files (``.dat``, N-CARS and older ATIS recordings), decoded here: by a numba
kernel (``native.dat``) where numba is installed, else vectorised with numpy (the reference).

After the ``%`` header come two bytes, the event type (0x00 or 0x0C: 2-D change events) and the
event size (8), then little-endian records of a 32-bit microsecond time (wraps around after
71 minutes; unwrapped here) and a 32-bit word: x (bits 13-0), y (27-14), polarity (31-28, 0 or
1). The oldest files have no header and neither byte. Sensor size: the header's ``Width`` and
``Height``, else the 304x240 ATIS of N-CARS when every event fits in it (see ``recording``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from spikeshot.events.array import EVENT_DTYPE, empty
from spikeshot.events.prophesee import Header, open_header, sized, unwrap
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

ATIS_SIZE = (304, 240)
_CD_TYPES = (0x00, 0x0C)
_RECORD = np.dtype([("t", "<u4"), ("data", "<u4")])


class _Decoder:
    """Decodes consecutive blocks of records, carrying the time's wrap-around across blocks: with
    the kernel ``native.dat`` where numba is installed (``native`` true), else with the numpy
    reference ``reference``."""

    def __init__(self, path, sensor: tuple[int, int] | None, native: bool = True):
        self.path, self.sensor = path, sensor
        self.t = -1  # unwrapped time of the last event
        self.kernels = kernels() if native else None

    def decode(self, offset: int, data: bytes) -> np.ndarray:
        if self.kernels is None:
            return self.reference(offset, data)
        records = np.frombuffer(data, dtype="<u4").reshape(-1, 2)
        events = np.empty(len(records), dtype=EVENT_DTYPE)
        _, ok, self.t = self.kernels.dat(records, self.t, *limits(self.sensor), events)
        if not ok:  # state unchanged: the reference raises the error
            return self.reference(offset, data)
        return events

    def reference(self, offset: int, data: bytes) -> np.ndarray:
        records = np.frombuffer(data, dtype=_RECORD)
        if not len(records):
            return empty()
        word = records["data"]
        polarity = word >> 28
        bad = polarity > 1
        pending = None  # a bad record's error, raised after those of the records before it
        if bad.any():
            i = int(np.argmax(bad))
            problem = f"polarity field is {polarity[i]}, not 0 or 1"
            pending = FormatError(self.path, offset + 8 * i, problem)
            if not i:
                raise pending
            records, word, polarity = records[:i], word[:i], polarity[:i]
        events = empty(len(records))
        events["t"] = unwrap(records["t"].astype(np.int64), self.t, 32)
        events["x"] = word & 0x3FFF
        events["y"] = (word >> 14) & 0x3FFF
        events["p"] = polarity
        self.t = int(events["t"][-1])
        if self.sensor is not None:
            check_inside(self.path, events, offset + 8 * np.arange(len(records)), self.sensor)
        if pending is not None:
            raise pending
        return events


def _blocks(stream, decoder: _Decoder, start: int, block_events: int) -> Iterator[np.ndarray]:
    with stream:
        for offset, data in read_records(stream, decoder.path, start, 8, block_events, "event"):
            yield decoder.decode(offset, data)


def source(
    path,
    block_events: int = 1 << 20,
    native: bool = True,
    stream: BinaryIO | None = None,
    header: Header | None = None,
) -> EventSource:
    """Open a DAT file: its header's sensor size and its events in blocks of at most
    ``block_events``; ``native=False`` decodes with numpy only. ``stream``: ``path`` already
    open (see ``prophesee.open_header``, with ``header``), which the source takes over."""
    stream, header = open_header(path, stream, header)  # the block generator closes the stream
    try:
        start = header.size
        if header.size:  # files with a header have the two bytes, older ones neither
            kind_size = stream.read(2)
            if len(kind_size) < 2:
                raise FormatError(path, start, "file ends before the event type and size bytes")
            if kind_size[0] not in _CD_TYPES or kind_size[1] != 8:
                raise FormatError(
                    path,
                    start,
                    f"event type 0x{kind_size[0]:02X} of {kind_size[1]} bytes is not a"
                    " supported 8-byte 2-D event type",
                )
            start += 2
        sensor = sized(header, path)
    except BaseException:
        stream.close()
        raise
    decoder = _Decoder(path, sensor, native)
    return EventSource("dat", _blocks(stream, decoder, start, block_events), sensor, ATIS_SIZE)


def read(path) -> Recording:
    """The whole DAT file."""
    return collect(source(path))


def iter_chunks(path, chunk_events: int = 1_000_000) -> Iterator[np.ndarray]:
    """The file's events in arrays of ``chunk_events`` (the last may be shorter)."""
    return rechunk(source(path, chunk_events).blocks, chunk_events)
