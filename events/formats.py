"""One entry point for every event file format: detect it, read it whole or in chunks, write it,
and summarise it.

=========  ===============================  ======  ======
format     files                            read    write
=========  ===============================  ======  ======
aedat4     ``.aedat4`` (iniVation DV)       yes     yes (needs ``faery``)
nmnist     ``.bin`` (N-MNIST, N-Caltech101) yes     yes
evt2       ``.raw`` with ``% evt 2.0``      yes     no
evt3       ``.raw`` with ``% evt 3.0``      yes     no
dat        ``.dat`` (Prophesee DAT)         yes     no
npy, npz   numpy event arrays               yes     yes
=========  ===============================  ======  ======

A FIFO is read as it is written; its format comes from its name's extension (reading its first
bytes would consume them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from spikeshot.events import aedat4, dat, evt2, evt3, nmnist, npyfile
from spikeshot.events.prophesee import Header, read_header
from spikeshot.events.recording import (
    EventSource,
    FormatError,
    Recording,
    check_chunk_events,
    collect,
    rechunk,
    sensor_size,
)

_READERS: dict[str, ModuleType] = {
    "aedat4": aedat4,
    "nmnist": nmnist,
    "evt2": evt2,
    "evt3": evt3,
    "dat": dat,
    "npy": npyfile,
    "npz": npyfile,
}
FORMATS = tuple(_READERS)
WRITABLE = ("aedat4", "nmnist", "npy", "npz")
_EXTENSIONS = {".aedat4": "aedat4", ".bin": "nmnist", ".dat": "dat", ".npy": "npy", ".npz": "npz"}
_EVT = {"2.0": "evt2", "3.0": "evt3"}


def _check_format(format: str) -> str:
    if format not in _READERS:
        raise ValueError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    return format


def _prophesee_format(header: Header, path) -> str:
    version = header.evt_version()
    if version in _EVT:
        return _EVT[version]
    if version is not None:
        raise FormatError(path, 0, f"EVT {version} files are not supported (EVT 2.0 and 3.0 are)")
    if os.path.splitext(os.fspath(path))[1].lower() == ".raw":
        raise FormatError(path, 0, "the header names no EVT version: pass format='evt2' or 'evt3'")
    return "dat"


def _detect(stream, path) -> tuple[str, Header | None]:
    """The format of the regular file open as ``stream``, and its Prophesee header if it has
    one: the stream is then left past the header, else at its first byte."""
    head = stream.peek(len(aedat4.MAGIC))  # a regular file's buffer: no extra read
    if head.startswith(aedat4.MAGIC):
        return "aedat4", None
    if head.startswith(npyfile.NPY_MAGIC):
        return "npy", None
    if head.startswith(npyfile.ZIP_MAGIC):
        return "npz", None
    if head.startswith(b"% "):
        header = read_header(stream)
        return _prophesee_format(header, path), header
    by_extension = _by_extension(path)
    if by_extension is None:
        raise FormatError(
            path, 0, f"unknown event file format (starts with {head[:8]!r}): pass format="
        )
    return by_extension, None


def _by_extension(path) -> str | None:
    return _EXTENSIONS.get(os.path.splitext(os.fspath(path))[1].lower())


def _pipe_format(path) -> str:
    format = _by_extension(path)
    if format is None:
        raise FormatError(path, 0, "a pipe's format comes from its extension: pass format=")
    return format


def detect_format(path) -> str:
    """The format of ``path``, from its first bytes (AEDAT4's magic line, numpy's and zip's
    magic numbers, the EVT version in a Prophesee ``%`` header, which otherwise means DAT), then
    from its extension. A FIFO is judged by its extension alone."""
    if aedat4.is_pipe(path):
        return _pipe_format(path)
    with open(path, "rb") as stream:
        return _detect(stream, path)[0]


def _source(path, format: str | None, block_events: int = 1 << 20) -> EventSource:
    """The reader's source of ``path``; a regular file whose format is detected is opened once,
    for detection and reading alike (what small files, such as N-CARS samples, mostly cost)."""
    if format is not None:
        return _READERS[_check_format(format)].source(path, block_events)
    if aedat4.is_pipe(path):
        return _READERS[_pipe_format(path)].source(path, block_events)
    stream = open(path, "rb")  # the source's blocks close it
    try:
        format, header = _detect(stream, path)
    except BaseException:
        stream.close()
        raise
    read_so_far = {} if header is None else {"header": header}
    return _READERS[format].source(path, block_events, stream=stream, **read_so_far)


def read(path, format: str | None = None) -> Recording:
    """The whole recording at ``path`` (format detected unless given)."""
    return collect(_source(path, format))


def iter_chunks(
    path, chunk_events: int = 1_000_000, format: str | None = None
) -> Iterator[np.ndarray]:
    """The events of ``path`` in arrays of ``chunk_events`` (the last may be shorter), holding
    only about one chunk in memory at a time."""
    chunk_events = check_chunk_events(chunk_events)
    return rechunk(_source(path, format, chunk_events).blocks, chunk_events)


def write(path, events: np.ndarray, width: int, height: int, format: str | None = None) -> None:
    """Write ``events`` to ``path`` as ``format`` (by default from the extension: .aedat4, .bin,
    .npy, .npz)."""
    if format is None:
        format = _EXTENSIONS.get(Path(path).suffix.lower())
        if format not in WRITABLE:
            raise ValueError(f"cannot tell a writable format from {str(path)!r}: pass format=")
    if format not in WRITABLE:
        raise ValueError(f"no writer for {format!r}; writable formats: {', '.join(WRITABLE)}")
    if format in ("npy", "npz"):
        npyfile.write(path, events, width, height, npz=format == "npz")
    else:
        _READERS[format].write(path, events, width, height)


def info(path, format: str | None = None) -> dict:
    """A summary of ``path``, read in chunks: format, sensor width and height, event and ON-event
    counts, first and last timestamps and the duration (us, None without events), the mean event
    rate (events/s, None unless the duration is positive) and the other streams."""
    source = _source(path, format)
    events = on = 0
    first = last = None
    x_max = y_max = -1
    for block in source.blocks:
        if not len(block):
            continue
        if first is None:
            first = int(block["t"][0])
        last = int(block["t"][-1])
        events += len(block)
        on += int(np.count_nonzero(block["p"]))
        x_max = max(x_max, int(block["x"].max()))
        y_max = max(y_max, int(block["y"].max()))
    width, height = sensor_size(source.sensor, source.nominal, x_max, y_max)
    duration = None if first is None else last - first
    return {
        "path": str(path),
        "format": source.format,
        "width": width,
        "height": height,
        "events": events,
        "on_events": on,
        "t_first_us": first,
        "t_last_us": last,
        "duration_us": duration,
        "mean_rate_ev_s": events / (duration * 1e-6) if duration else None,
        "other_streams": list(source.other_streams),
    }
