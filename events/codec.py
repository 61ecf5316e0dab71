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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikeshot.events.array import EventColumns, EventError, check_events

# (name, wire dtype) in wire order.
COLUMNS = (
    ("t", np.dtype("<i8")),
    ("x", np.dtype("<u2")),
    ("y", np.dtype("<u2")),
    ("p", np.dtype("u1")),
)


class EncodedEvents(NamedTuple):
    """The four columns of an event array as bytes (layout in the module docstring)."""

    t: bytes
    x: bytes
    y: bytes
    p: bytes


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
