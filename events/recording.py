"""What every file reader returns, the error it raises on a bad file, and the helpers the readers
share: an opened event source, re-chunking, the sensor-size rule, and access to the numba kernels
(``native``) that decode where numba is installed.

Sensor size rule, used by every reader: a size stated in the file (a header, a stream
description) is used as is, and an event outside it makes the file corrupt. Otherwise the
format's usual sensor (N-MNIST's 34x34, a Prophesee camera named in the header) is used when
every event fits in it; otherwise the size is the largest coordinate plus one.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from spikeshot.events.array import EVENT_DTYPE, empty

_RECORD = np.dtype((np.void, EVENT_DTYPE.itemsize))  # an event as raw bytes


class FormatError(ValueError):
    """A file that cannot be decoded; ``path`` names it and ``offset`` is the byte offset where
    the problem was found."""

    def __init__(self, path, offset: int, problem: str):
        self.path, self.offset, self.problem = str(path), offset, problem
        super().__init__(f"{self.path}: {problem} (at byte offset {offset})")


@dataclass(frozen=True)
class Recording:
    """A whole recording: events (``EVENT_DTYPE``, in file order), the sensor size, the format's
    name and the names of the file's other, non-event streams (IMU, triggers, frames)."""

    events: np.ndarray
    width: int
    height: int
    format: str
    other_streams: tuple[str, ...] = ()


@dataclass
class EventSource:
    """An opened file: what its header says, and its events as blocks of bounded size.

    ``sensor`` is a size the file states (events outside it are an error, checked by the
    reader); ``nominal`` is the format's usual sensor, used only when every event fits.
    """

    format: str
    blocks: Iterator[np.ndarray]
    sensor: tuple[int, int] | None = None
    nominal: tuple[int, int] | None = None
    other_streams: tuple[str, ...] = ()


def check_chunk_events(chunk_events: int) -> int:
    """``chunk_events`` as an int, or a ValueError when it is not a positive integer."""
    if isinstance(chunk_events, bool) or int(chunk_events) != chunk_events or chunk_events < 1:
        raise ValueError(f"chunk_events must be a positive integer, got {chunk_events!r}")
    return int(chunk_events)


def rechunk(blocks: Iterable[np.ndarray], chunk_events: int) -> Iterator[np.ndarray]:
    """Regroup event blocks of any sizes into arrays of exactly ``chunk_events`` events (the last
    one may be shorter); empty input yields nothing."""
    n = check_chunk_events(chunk_events)
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        while len(block):
            take = min(n - held, len(block))
            pending.append(block[:take])
            held += take
            block = block[take:]
            if held == n:
                yield pending[0] if len(pending) == 1 else join(pending)
                pending, held = [], 0
    if held:
        yield join(pending)


def join(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)``; event arrays are joined as raw records, which numpy copies about
    ten times faster than record by record, field by field."""
    if all(part.dtype == EVENT_DTYPE for part in parts):
        return np.concatenate([part.view(_RECORD) for part in parts]).view(EVENT_DTYPE)
    return np.concatenate(parts)


def concat(blocks: Iterable[np.ndarray]) -> np.ndarray:
    """All blocks as one event array (an empty one when there are none)."""
    parts = [b for b in blocks if len(b)]
    if not parts:
        return empty()
    return parts[0] if len(parts) == 1 else join(parts)


def sensor_size(
    sensor: tuple[int, int] | None,
    nominal: tuple[int, int] | None,
    x_max: int,
    y_max: int,
) -> tuple[int, int]:
    """The sensor-size rule above, given the largest coordinates seen (-1 without events)."""
    if sensor is not None:
        return sensor
    if nominal is not None and x_max < nominal[0] and y_max < nominal[1]:
        return nominal
    return x_max + 1, y_max + 1


@functools.cache
def kernels() -> ModuleType | None:
    """The readers' numba kernels (``native``), imported on the first call; None where numba
    cannot be imported (the readers then decode with numpy)."""
    try:
        return importlib.import_module("spikeshot.events.native")
    except ImportError:
        return None


def extent(events: np.ndarray) -> tuple[int, int]:
    """The largest x and y of ``events`` (-1 without any)."""
    if not len(events):
        return -1, -1
    compiled = kernels()
    if compiled is not None:
        return compiled.extent(events)
    return int(events["x"].max()), int(events["y"].max())


def collect(source: EventSource) -> Recording:
    """Read every block of ``source`` into a ``Recording``."""
    events = concat(source.blocks)
    width, height = sensor_size(source.sensor, source.nominal, *extent(events))
    return Recording(events, width, height, source.format, source.other_streams)


MAX_SENSOR_SIZE = 65535  # the widest and tallest sensor a file may state


def limits(sensor: tuple[int, int] | None) -> tuple[int, int]:
    """The bounds a kernel checks coordinates against: ``sensor``, or none (2**16) without one."""
    return sensor if sensor is not None else (1 << 16, 1 << 16)


def check_inside(path, events: np.ndarray, offsets: np.ndarray, sensor: tuple[int, int]) -> None:
    """Raise ``FormatError`` at the first event outside ``sensor``; ``offsets`` holds each event's
    byte offset in the file."""
    bad = (events["x"] >= sensor[0]) | (events["y"] >= sensor[1])
    if bad.any():
        i = int(np.argmax(bad))
        raise FormatError(
            path,
            int(offsets[i]),
            f"event at x={events['x'][i]}, y={events['y'][i]} lies outside the "
            f"{sensor[0]}x{sensor[1]} sensor the file states",
        )


def read_records(
    stream,
    path,
    offset: int,
    record_bytes: int,
    block_records: int,
    what: str,
    count: int | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Read ``stream`` (a file or a pipe) from byte ``offset`` on, in blocks of whole records of
    ``record_bytes`` bytes, up to ``count`` records (None: to the end); yield (offset of the
    block, its bytes). A stream that ends inside a record raises ``FormatError`` at that
    record's offset."""
    want = record_bytes * max(1, block_records)
    left = None if count is None else count * record_bytes
    carry = b""
    while left is None or left > 0:
        size = want if left is None else min(want, left)
        data = stream.read(size - len(carry))
        if not data:
            if carry:
                raise FormatError(
                    path,
                    offset,
                    f"file ends inside a {record_bytes}-byte {what} ({len(carry)} bytes left):"
                    " truncated",
                )
            return
        data = carry + data if carry else data
        whole = len(data) - len(data) % record_bytes
        carry = data[whole:]
        if whole:
            yield offset, data[:whole]
            offset += whole
            if left is not None:
                left -= whole
