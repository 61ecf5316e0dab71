"""The wire codec: an event array as four columnar little-endian byte strings.

For ``n`` events the four columns are, in this order::

    t  n * 8 bytes  int64, little-endian, microseconds
    x  n * 2 bytes  uint16, little-endian, column
    y  n * 2 bytes  uint16, little-endian, row
    p  n * 1 byte   uint8, polarity (1 = ON, 0 = OFF)

with no header, padding or separators: value ``i`` of a column is at byte ``i * itemsize``. The
columns of one message describe the same events, so all four hold the same count ``n``; zero
events are four empty strings. ``decode_columns`` is ``np.frombuffer`` per column (no copy);
``decode`` copies those into an event array. Both check lengths only (call ``validate`` for ranges
and order).

The packed layout (8 bytes an event instead of 13) is an integer ``t_origin`` and two columns::

    dt   n * 4 bytes  uint32, little-endian: t - t_origin
    xyp  n * 4 bytes  uint32, little-endian: x | y << 16 | p << 31

so it holds events whose timestamps span less than 2^32 us (71 minutes), whose rows are below
2^15 and whose polarities are 0 or 1 (anything else would change in packing). ``pack`` writes it
(None for events it cannot hold); ``packed_columns`` reads it (``PackedColumns.unpack``: the four
columns).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikeshot.events.array import EVENT_DTYPE, EventColumns, EventError, check_events

# (name, wire dtype) in wire order.
COLUMNS = (
    ("t", np.dtype("<i8")),
    ("x", np.dtype("<u2")),
    ("y", np.dtype("<u2")),
    ("p", np.dtype("u1")),
)


# (name, wire dtype) of the packed layout's columns.
PACKED_COLUMNS = (("dt", np.dtype("<u4")), ("xyp", np.dtype("<u4")))
PACKED_MAX_SPAN_US = 2**32 - 1
PACKED_MAX_Y = 2**15 - 1
PACKED_MAX_ORIGIN = 2**63 - 2**32  # every t_origin + dt fits int64


class EncodedEvents(NamedTuple):
    """The four columns of an event array as bytes (layout in the module docstring)."""

    t: bytes
    x: bytes
    y: bytes
    p: bytes


class PackedEvents(NamedTuple):
    """Events in the packed layout (module docstring): the origin and two columns of bytes."""

    t_origin: int
    dt: bytes
    xyp: bytes


def columns(events: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four columns of a 1-D ``EVENT_DTYPE`` array in their wire dtypes, as views where the
    dtype already matches (what ``encode`` serialises; ``clients.wire`` writes them into a message
    directly)."""
    if isinstance(events, EventColumns):
        raise EventError("dtype", "expected an array of EVENT_DTYPE, got EventColumns")
    check_events(events)
    return tuple(events[name].astype(dt, copy=False) for name, dt in COLUMNS)


def encode(events: np.ndarray) -> EncodedEvents:
    """Serialise a 1-D ``EVENT_DTYPE`` array into its four little-endian columns."""
    return EncodedEvents(*(column.tobytes() for column in columns(events)))


def decode_columns(t: bytes, x: bytes, y: bytes, p: bytes) -> EventColumns:
    """Zero-copy views of four columns (any bytes-like objects), for ``validate`` and
    ``bin_events`` to read directly: the server's path.

    Raises ``EventError`` naming the column whose byte length is not a multiple of its item size,
    or whose count differs from ``t``'s.
    """
    cols = []
    for (name, dt), buf in zip(COLUMNS, (t, x, y, p), strict=True):
        nbytes = memoryview(buf).nbytes
        if nbytes % dt.itemsize:
            raise EventError(
                name, f"byte length {nbytes} is not a multiple of {dt.itemsize} ({dt.name})"
            )
        cols.append(np.frombuffer(buf, dtype=dt))
    n = len(cols[0])
    for (name, _), col in zip(COLUMNS[1:], cols[1:], strict=True):
        if len(col) != n:
            raise EventError(name, f"{len(col)} values but t has {n}")
    return EventColumns(*cols)


def decode(t: bytes, x: bytes, y: bytes, p: bytes) -> np.ndarray:
    """Rebuild an event array (a copy) from four columns; errors as ``decode_columns``."""
    return decode_columns(t, x, y, p).to_array()


def pack(events: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """The packed layout of a 1-D ``EVENT_DTYPE`` array: ``t_origin`` (its first timestamp),
    ``dt`` and ``xyp`` as uint32 arrays; None for events that would change in packing (a first
    timestamp above ``PACKED_MAX_ORIGIN``, a timestamp before the first or 2^32 us or more after
    it, a row of 2^15 or more, a polarity above 1: the server judges those, sent as columns)."""
    check_events(events)
    if not len(events):
        return 0, np.empty(0, "<u4"), np.empty(0, "<u4")
    events = np.ascontiguousarray(events)
    origin = int(events["t"][0])
    if origin > PACKED_MAX_ORIGIN:
        return None
    # int64 may wrap here, but never into [0, 2^32) from an origin this low: the checks hold
    dt = events["t"] - origin
    if dt.min() < 0 or dt.max() > PACKED_MAX_SPAN_US:
        return None
    # x and y side by side in each record: one little-endian uint32 x | y << 16
    xy = np.ndarray(len(events), "<u4", events, EVENT_DTYPE.fields["x"][1], (events.itemsize,))
    p = events["p"]
    if xy.max() > PACKED_MAX_Y << 16 | 0xFFFF or p.max() > 1:
        return None
    xyp = p.astype("<u4")
    xyp <<= 31
    xyp |= xy
    return origin, dt.astype("<u4"), xyp


class PackedColumns(NamedTuple):
    """Packed events as zero-copy uint32 views (``packed_columns``)."""

    t_origin: int
    dt: np.ndarray
    xyp: np.ndarray

    def unpack(self) -> EventColumns:
        """The four columns (copies in the column dtypes)."""
        return EventColumns(
            self.dt.astype(np.int64) + self.t_origin,
            (self.xyp & 0xFFFF).astype(np.uint16),
            ((self.xyp >> 16) & PACKED_MAX_Y).astype(np.uint16),
            (self.xyp >> 31).astype(np.uint8),
        )


def packed_columns(t_origin: int, dt: bytes, xyp: bytes) -> PackedColumns:
    """Views of the packed columns (any bytes-like objects), after checking their lengths and
    that ``t_origin + dt`` cannot pass int64: ``EventError`` otherwise."""
    if t_origin > PACKED_MAX_ORIGIN:
        raise EventError("t_origin", f"must be at most 2^63 - 2^32 ({PACKED_MAX_ORIGIN})")
    cols = []
    for (name, dtype), buf in zip(PACKED_COLUMNS, (dt, xyp), strict=True):
        nbytes = memoryview(buf).nbytes
        if nbytes % dtype.itemsize:
            raise EventError(name, f"byte length {nbytes} is not a multiple of 4 (uint32)")
        cols.append(np.frombuffer(buf, dtype=dtype))
    if len(cols[1]) != len(cols[0]):
        raise EventError("xyp", f"{len(cols[1])} values but dt has {len(cols[0])}")
    return PackedColumns(t_origin, *cols)
