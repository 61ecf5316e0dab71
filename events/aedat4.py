"""AEDAT 4.0 files (iniVation DV) through the ``aedat`` package; written through ``faery``.

The file is a magic line, a 4-byte length, a FlatBuffers header whose XML description lists the
streams, then packets: a 4-byte stream id, a 4-byte size and that many (LZ4- or
Zstd-compressed) bytes. The first event stream is read; the others (IMU, triggers, frames, more
event streams) are named in ``other_streams``. The sensor size is the event stream's description.

``aedat`` only opens paths and holds the GIL while it blocks on a read, so a FIFO (a live camera
pipe) is decoded in a child process that hands the arrays back over a pipe, leaving the caller's
threads free. The child is a fresh interpreter (``subprocess``): multiprocessing's spawn would
re-run the caller's unguarded ``__main__``, and fork is unsafe in a process with threads. On a
decoding error the packet headers are walked to report the byte offset of the bad packet (unknown
for a pipe).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aedat
import numpy as np

from spikeshot.events.array import EVENT_DTYPE, Limits, as_events, validate
from spikeshot.events.recording import (
    EventSource,
    FormatError,
    Recording,
    collect,
    kernels,
    rechunk,
)

MAGIC = b"#!AER-DAT4.0\r\n"
_DESCRIPTION = len(MAGIC) + 4  # byte offset of the header that holds the stream description
_PACKET_DTYPE = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), (("p", "on"), "?")])


def _streams(decoder, path) -> tuple[int, tuple[int, int], tuple[str, ...]]:
    """The first event stream's id and size, and the other streams' types."""
    streams = decoder.id_to_stream()
    events = sorted(i for i, s in streams.items() if s["type"] == "events")
    if not events:
        kinds = ", ".join(streams[i]["type"] for i in sorted(streams)) or "none"
        raise FormatError(path, _DESCRIPTION, f"holds no event stream (its streams: {kinds})")
    first = events[0]
    size = (int(streams[first]["width"]), int(streams[first]["height"]))
    others = tuple(streams[i]["type"] for i in sorted(streams) if i != first)
    return first, size, others


def _failure(path, packets: int, problem: str) -> FormatError:
    """The error for a regular file on which decoding failed after ``packets`` whole packets
    (-1: while reading the header), located by walking the packet headers."""
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        magic = stream.read(len(MAGIC))
        if magic != MAGIC:
            if MAGIC.startswith(magic):
                return FormatError(path, len(magic), f"file ends inside the magic line ({problem})")
            return FormatError(path, 0, "not an AEDAT 4.0 file (no '#!AER-DAT4.0' line)")
        raw = stream.read(4)
        position = _DESCRIPTION + int.from_bytes(raw, "little")
        if len(raw) < 4 or position > size:
            return FormatError(path, len(MAGIC), f"file ends inside the header ({problem})")
        if packets < 0:
            return FormatError(path, _DESCRIPTION, f"bad header: {problem}")
        for _ in range(packets):
            stream.seek(position)
            position += 8 + int.from_bytes(stream.read(8)[4:], "little")
        stream.seek(position)
        head = stream.read(8)
        if len(head) < 8:
            return FormatError(path, position, f"file ends inside a packet header ({problem})")
        length = int.from_bytes(head[4:], "little")
        if position + 8 + length > size:
            return FormatError(
                path,
                position,
                f"packet of {length} bytes runs past the end of the file ({size} bytes):"
                f" truncated ({problem})",
            )
        return FormatError(path, position, f"corrupt packet: {problem}")


# The header's FlatBuffers table (dv-processing's IOHeader): field number -> (name, bytes).
_HEADER_FIELDS = {0: ("compression", 4), 1: ("dataTablePosition", 8), 2: ("infoNode", 4)}
_COMPRESSIONS = range(5)  # NONE, LZ4, LZ4_HIGH, ZSTD, ZSTD_HIGH


def _check_header(path) -> None:
    """Raise ``FormatError`` unless the file starts with the magic line and a header whose
    FlatBuffers offsets all stay inside it: ``aedat`` reads the header without such checks, and
    a bad offset there aborts the whole process (a Rust panic that cannot be caught)."""
    with open(path, "rb") as stream:
        start = stream.read(_DESCRIPTION)
        size = int.from_bytes(start[len(MAGIC) :], "little")
        header = stream.read(size) if len(start) == _DESCRIPTION else b""
    if start[: len(MAGIC)] != MAGIC or len(header) < size:
        raise _failure(path, -1, "the file ends inside its header")
    problem = _header_problem(header)
    if problem is not None:
        raise FormatError(path, _DESCRIPTION, f"bad header: {problem}")


def _header_problem(buf: bytes) -> str | None:
    """What is wrong with the IOHeader FlatBuffer ``buf``, or None."""

    def inside(at: int, n: int) -> bool:
        return 0 <= at and at + n <= len(buf)

    def u(at: int, n: int) -> int | None:
        return int.from_bytes(buf[at : at + n], "little") if inside(at, n) else None

    root = u(0, 4)
    back = u(root, 4) if root is not None else None
    if back is None:
        return "its root offset points outside it"
    vtable = root - (back - 2**32 if back >= 2**31 else back)  # a signed offset back
    vtable_size, table_size = u(vtable, 2), u(vtable + 2, 2)
    if vtable_size is None or table_size is None or vtable_size < 4 or vtable_size % 2:
        return "its table's vtable lies outside it or is malformed"
    if not (inside(vtable, vtable_size) and inside(root, table_size)):
        return "its table or vtable runs past its end"
    for field in range((vtable_size - 4) // 2):
        offset = u(vtable + 4 + 2 * field, 2)
        if not offset or field not in _HEADER_FIELDS:
            continue
        name, width = _HEADER_FIELDS[field]
        if offset + width > table_size:
            return f"its field {name} lies outside its table"
        value = u(root + offset, width)
        if name == "compression" and value not in _COMPRESSIONS:
            return f"unknown compression {value}"
        if name == "infoNode":
            text = root + offset + value
            length = u(text, 4)
            if length is None or text + 4 + length + 1 > len(buf):
                return "its stream description runs past its end"
            try:
                buf[text + 4 : text + 4 + length].decode()
            except UnicodeDecodeError as error:  # aedat's own decoding of it aborts
                return f"its stream description is not UTF-8 ({error.reason} at byte {error.start})"
    return None


def _is_interrupt(error: BaseException) -> bool:
    return isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit))


def _checked(events: np.ndarray, size: tuple[int, int]) -> str | None:
    """The problem with a packet whose events lie outside the stated sensor, else None."""
    bad = (events["x"] >= size[0]) | (events["y"] >= size[1])
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return (
        f"event at x={events['x'][i]}, y={events['y'][i]} lies outside the {size[0]}x{size[1]}"
        " sensor the stream description states"
    )


def _events(
    packet: np.ndarray, size: tuple[int, int], native: bool = True
) -> tuple[np.ndarray, str | None]:
    """A packet's events as ``EVENT_DTYPE``, and the problem with them (``_checked``) or None.
    ``aedat``'s packets have the layout of ``EVENT_DTYPE`` (``on`` a 0/1 byte where ``p`` is):
    where numba is installed (``native`` true) a packet the kernel ``native.valid`` passes is
    viewed as events, without a copy; otherwise (and to report what the kernel found) it is
    converted by ``as_events``."""
    compiled = kernels() if native else None
    if compiled is not None and packet.dtype == _PACKET_DTYPE:
        events = packet.view(EVENT_DTYPE)
        if compiled.valid(events, *size):
            return events, None
    events = as_events(packet)
    return events, _checked(events, size)


def _file_blocks(
    path, decoder, stream_id: int, size: tuple[int, int], native: bool
) -> Iterator[np.ndarray]:
    done = 0
    try:
        for packet in decoder:
            if packet["stream_id"] == stream_id:
                events, problem = _events(packet["events"], size, native)
                if problem is not None:
                    raise _failure(path, done, problem)
                yield events
            done += 1
    except FormatError:
        raise
    except BaseException as error:  # aedat raises RuntimeError, and a Rust panic a BaseException
        if _is_interrupt(error):
            raise
        raise _failure(path, done, str(error)) from None


def _frame(out, kind: bytes, payload: bytes) -> None:
    out.write(kind + len(payload).to_bytes(8, "little") + payload)
    out.flush()


def _serve_pipe(path: str) -> None:
    """Child process: decode the AEDAT4 stream at ``path`` and write frames to stdout: b"S" the
    sizes (JSON), b"E" event arrays (raw ``EVENT_DTYPE`` bytes), b"F" a failure (JSON)."""
    out = sys.stdout.buffer
    done = 0
    try:
        decoder = aedat.Decoder(path)
        stream_id, size, others = _streams(decoder, path)
        _frame(out, b"S", json.dumps({"size": size, "other_streams": others}).encode())
        for packet in decoder:
            if packet["stream_id"] == stream_id:
                events, problem = _events(packet["events"], size)
                if problem is not None:
                    raise ValueError(problem)
                _frame(out, b"E", events.tobytes())
            done += 1
    except BaseException as error:
        if _is_interrupt(error):
            raise
        problem = error.problem if isinstance(error, FormatError) else str(error)
        _frame(out, b"F", json.dumps({"problem": f"packet #{done + 1}: {problem}"}).encode())


def _read_frame(child: subprocess.Popen, path) -> tuple[bytes, bytes]:
    """The child's next frame; (b"", b"") once it has exited cleanly."""
    head = child.stdout.read(9)
    if not head and child.wait() == 0:
        return b"", b""
    size = int.from_bytes(head[1:], "little")
    payload = child.stdout.read(size) if len(head) == 9 else b""
    if len(head) < 9 or len(payload) < size:
        code = child.wait()
        raise FormatError(path, None, f"the AEDAT4 decoder process died (exit code {code})")
    return head[:1], payload


def _pipe_blocks(child: subprocess.Popen, path) -> Iterator[np.ndarray]:
    try:
        while True:
            kind, payload = _read_frame(child, path)
            if kind == b"F":
                raise FormatError(path, None, json.loads(payload)["problem"])
            if kind != b"E":
                return
            yield np.frombuffer(payload, dtype=EVENT_DTYPE).copy()
    finally:
        child.stdout.close()
        if child.poll() is None:
            child.terminate()
        child.wait()


def _pipe_source(path) -> EventSource:
    code = "import sys; from spikeshot.events.aedat4 import _serve_pipe; _serve_pipe(sys.argv[1])"
    child = subprocess.Popen(
        [sys.executable, "-c", code, os.fspath(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    kind, payload = _read_frame(child, path)
    if kind != b"S":
        child.stdout.close()
        child.wait()
        problem = json.loads(payload)["problem"] if kind == b"F" else "no stream description"
        raise FormatError(path, None, problem)
    header = json.loads(payload)
    blocks = _pipe_blocks(child, path)
    others = tuple(header["other_streams"])
    return EventSource("aedat4", blocks, tuple(header["size"]), None, others)


def is_pipe(path) -> bool:
    """True when ``path`` is a FIFO (a named pipe)."""
    return stat.S_ISFIFO(os.stat(path).st_mode)


def source(path, native: bool = True) -> EventSource:
    """Open an AEDAT4 file or FIFO: its event stream's size, the other streams, and the events
    packet by packet as they are decoded; ``native=False`` converts them with numpy only."""
    if is_pipe(path):
        return _pipe_source(path)  # the decoding child may die of a bad header: reported
    _check_header(path)
    try:
        decoder = aedat.Decoder(os.fspath(path))
    except BaseException as error:
        if _is_interrupt(error) or isinstance(error, OSError):
            raise
        raise _failure(path, -1, str(error)) from None
    stream_id, size, others = _streams(decoder, path)
    blocks = _file_blocks(path, decoder, stream_id, size, native)
    return EventSource("aedat4", blocks, size, None, others)


def read(path) -> Recording:
    """The whole AEDAT4 file (or everything a FIFO delivers until its writer closes it)."""
    return collect(source(path))


def iter_chunks(path, chunk_events: int = 1_000_000) -> Iterator[np.ndarray]:
    """The events in arrays of ``chunk_events`` (the last may be shorter)."""
    return rechunk(source(path).blocks, chunk_events)


def write(path, events: np.ndarray, width: int, height: int) -> None:
    """Write ``events`` (time-ordered, t >= 0, inside ``width`` x ``height``) as an LZ4-compressed
    AEDAT4 file with one event stream. Needs the ``faery`` package."""
    try:
        import faery
    except ImportError:
        raise ImportError("writing AEDAT4 needs the faery package: pip install faery") from None
    events = validate(as_events(events), Limits(width, height, allow_empty=True))
    if len(events) and events["t"][0] < 0:
        raise ValueError(f"AEDAT4 times are not negative, got {events['t'][0]} us")
    out = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
    out["t"], out["x"], out["y"], out["on"] = events["t"], events["x"], events["y"], events["p"]
    stream = faery.events_stream_from_array(out, dimensions=(int(width), int(height)))
    stream.to_file(Path(path), file_type="aedat")
