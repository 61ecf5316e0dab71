"""Event arrays in numpy's ``.npy`` and ``.npz`` files, read in blocks without loading the file.

A ``.npy`` file holds one 1-D structured array with t, x, y, p fields (or another library's
names for them, see ``array.as_events``). A ``.npz`` archive holds such an array named
``events`` (or as its only other array) and may hold the sensor size as ``width`` and ``height``.
Sensor size: the archive's ``width``/``height``, else the largest coordinate plus one.
Pickled object arrays are never loaded.
"""

from __future__ import annotations

import lzma
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from spikeshot.events.array import EventError, Limits, as_events, validate
from spikeshot.events.recording import (
    EventSource,
    FormatError,
    Recording,
    check_inside,
    collect,
    read_records,
    rechunk,
)

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# What reading a damaged archive member raises: a bad CRC or header, corrupt compressed data,
# a compression method zipfile lacks, a member cut short, an encrypted member (RuntimeError).
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    EOFError,
    OSError,
    RuntimeError,
)


class _Counted:
    """A reader that counts the bytes read through it."""

    def __init__(self, stream):
        self.stream, self.position = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.position += len(data)
        return data


def _array_header(counted: _Counted, path, where: str) -> tuple[np.dtype, int]:
    """Read a ``.npy`` header; return the dtype and event count after checking they hold events."""
    try:
        major, minor = np.lib.format.read_magic(counted)
        if major == 1:
            shape, _, dtype = np.lib.format.read_array_header_1_0(counted)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(counted)
    except _ARCHIVE_ERRORS as error:
        raise FormatError(path, counted.position, f"{where}unreadable: {error}") from None
    except Exception:  # numpy's header parser: ValueError, SyntaxError, TokenError, ...
        problem = "bad .npy header: not the descr, fortran_order and shape numpy writes"
        raise FormatError(path, counted.position, f"{where}{problem}") from None
    if dtype.hasobject:
        raise FormatError(path, counted.position, f"{where}holds Python objects, not events")
    if len(shape) != 1:
        raise FormatError(path, counted.position, f"{where}holds shape {shape}, not 1-D events")
    try:
        as_events(np.zeros(0, dtype=dtype))
    except EventError as error:
        raise FormatError(path, counted.position, f"{where}{error}") from None
    return dtype, shape[0]


def _events(path, offset: int, records: np.ndarray, where: str) -> np.ndarray:
    """``records`` as an event array of their own (polarity 0 or 1, coordinates that fit), or a
    ``FormatError`` at the first bad record."""
    try:
        events = as_events(records)
    except EventError as error:
        at = offset + records.itemsize * (error.index or 0)
        raise FormatError(path, at, f"{where}events.{error.field}: {error.rule}") from None
    bad = events["p"] > 1
    if bad.any():
        i = int(np.argmax(bad))
        raise FormatError(
            path, offset + records.itemsize * i, f"{where}polarity is {events['p'][i]}, not 0 or 1"
        )
    return events.copy() if events.base is not None else events


def _blocks(stream, path, start, dtype, count, block_events, where, sensor) -> Iterator[np.ndarray]:
    got = 0
    try:
        with stream:
            for offset, data in read_records(
                stream, path, start, dtype.itemsize, block_events, "event", count
            ):
                events = _events(path, offset, np.frombuffer(data, dtype=dtype), where)
                if sensor is not None:
                    at = offset + dtype.itemsize * np.arange(len(events))
                    check_inside(path, events, at, sensor)
                got += len(events)
                yield events
    except _ARCHIVE_ERRORS as error:
        raise FormatError(
            path, start + got * dtype.itemsize, f"{where}unreadable: {error}"
        ) from None
    if got < count:
        raise FormatError(
            path,
            start + got * dtype.itemsize,
            f"{where}file ends after {got} of the {count} events its header announces: truncated",
        )


def _member(archive: zipfile.ZipFile, path) -> str:
    names = [n for n in archive.namelist() if n.endswith(".npy")]
    if "events.npy" in names:
        return "events.npy"
    others = [n for n in names if n not in ("width.npy", "height.npy")]
    if len(others) != 1:
        raise FormatError(path, 0, f"archive holds no array named 'events' (it holds {names})")
    return others[0]


def _stated_size(archive: zipfile.ZipFile, path) -> tuple[int, int] | None:
    names = set(archive.namelist())
    if not {"width.npy", "height.npy"} <= names:
        return None
    size = []
    for name in ("width.npy", "height.npy"):
        try:
            with archive.open(name) as member:
                value = np.load(member, allow_pickle=False)
        except _ARCHIVE_ERRORS as error:
            raise FormatError(path, 0, f"{name} is unreadable: {error}") from None
        except Exception:  # numpy's parser: ValueError, SyntaxError, TokenError, ... (found by
            # fuzzing; its messages may hold object addresses, so none is echoed)
            problem = "not a .npy array as numpy writes one"
            raise FormatError(path, 0, f"{name} is unreadable: {problem}") from None
        if value.shape != () or value.dtype.kind not in "iu" or value < 1:
            raise FormatError(path, 0, f"{name} is {value!r}, not a positive integer")
        size.append(int(value))
    return size[0], size[1]


def source(path, block_events: int = 1 << 20, stream: BinaryIO | None = None) -> EventSource:
    """Open a ``.npy`` or ``.npz`` file (told apart by their first bytes): its stated sensor size
    and its events in blocks of at most ``block_events``. In an archive, byte offsets in errors
    count within the member's uncompressed data. ``stream``: ``path`` already open at its first
    byte, which the source takes over."""
    stream = stream or open(path, "rb")  # closed by the block generator
    magic = stream.peek(6)[:6]
    sensor, where, fmt = None, "", "npy"
    if magic.startswith(ZIP_MAGIC):
        stream.close()
        try:
            with zipfile.ZipFile(path) as archive:  # the member stays open after this closes
                name = _member(archive, path)
                sensor = _stated_size(archive, path)
                stream, where, fmt = archive.open(name), f"member {name}: ", "npz"
        except FormatError:
            raise
        except (*_ARCHIVE_ERRORS, ValueError) as error:  # ValueError: a name that is not UTF-8
            raise FormatError(path, 0, f"not a readable .npz archive: {error}") from None
    elif magic != NPY_MAGIC:
        stream.close()
        raise FormatError(path, 0, f"starts with {magic!r}, neither a .npy nor a .npz file")
    counted = _Counted(stream)
    try:
        dtype, count = _array_header(counted, path, where)
    except FormatError:
        stream.close()
        raise
    blocks = _blocks(stream, path, counted.position, dtype, count, block_events, where, sensor)
    return EventSource(fmt, blocks, sensor)


def read(path) -> Recording:
    """The whole file."""
    return collect(source(path))


def iter_chunks(path, chunk_events: int = 1_000_000) -> Iterator[np.ndarray]:
    """The file's events in arrays of ``chunk_events`` (the last may be shorter)."""
    return rechunk(source(path, chunk_events).blocks, chunk_events)


def write(path, events: np.ndarray, width: int, height: int, *, npz: bool | None = None) -> None:
    """Write ``events`` as ``.npz`` (with ``width`` and ``height``) when ``npz`` is true or, when
    it is None, when the path ends in ``.npz``; else as ``.npy`` (which has no room for the
    sensor size, so it is only checked). The file is written at ``path`` exactly."""
    events = validate(as_events(events), Limits(width, height, allow_empty=True))
    if npz is None:
        npz = Path(path).suffix.lower() == ".npz"
    with open(path, "wb") as out:
        if npz:
            np.savez(out, events=events, width=np.int64(width), height=np.int64(height))
        else:
            np.save(out, events, allow_pickle=False)
