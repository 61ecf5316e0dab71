"""AEDAT 4.0 files and live pipes (iniVation DV), decoded here; written through ``faery``.

The file is the magic line, a 4-byte length and a FlatBuffers ``IOHeader`` (the packets'
compression, the byte offset of the packet index that ends them or -1, and an XML description of
the streams), then packets: a 4-byte stream id, a 4-byte size and that many bytes, a size-prefixed
FlatBuffer compressed by the header's codec (none, LZ4 or Zstd: the ``lz4`` and ``zstandard``
packages). Event packets (``EVTS``) hold 16-byte records: int64 t, uint16 x, uint16 y, a 0/1 byte
``on`` and three bytes of padding. The first event stream is read; the others (IMU, triggers,
frames, more event streams) are named in ``other_streams`` and skipped without decompressing.

The file is read front to back in bounded memory (no packet over ``MAX_PACKET`` bytes), so a FIFO
(a live camera pipe) reads as a file does and blocks without holding the GIL; every error names the
byte offset of the header or packet at fault. Records convert with the kernel ``native.aedat``
where numba is installed, else with numpy (the reference); the ``aedat`` package is the
independent decoder the tests compare both against.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree

import lz4.frame
import numpy as np
import zstandard

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
MAX_PACKET = 1 << 27  # bytes a header or packet may hold, compressed or not (8 Mi events)
_DESCRIPTION = len(MAGIC) + 4  # byte offset of the IOHeader
_CODECS = ("none", "LZ4", "LZ4 (high)", "Zstd", "Zstd (high)")  # by the header's number
_TYPES = {"EVTS": "events", "FRME": "frame", "IMUS": "imus", "TRIG": "triggers"}  # aedat's names
RECORD_DTYPE = np.dtype(
    {
        "names": ["t", "x", "y", "p"],
        "formats": ["<i8", "<u2", "<u2", "u1"],
        "offsets": [0, 8, 10, 12],
        "itemsize": 16,
    }
)
_U16, _U32, _I32, _I64 = (struct.Struct(f) for f in ("<H", "<I", "<i", "<q"))


@dataclass(frozen=True)
class _Header:
    codec: int  # index into _CODECS
    index: int  # byte offset of the packet index that ends the packets, -1 without one
    stream_ids: frozenset[int]  # every stream's the description lists
    stream_id: int  # the first event stream's
    size: tuple[int, int]
    other_streams: tuple[str, ...]


class _Table:
    """A FlatBuffers table of ``buf`` at byte ``at``; a ValueError names what lies outside."""

    @classmethod
    def root(cls, buf: memoryview) -> _Table:
        """The buffer's root table, which its first four bytes point to."""
        if len(buf) < 4:
            raise ValueError("its root offset points outside it")
        return cls(buf, _U32.unpack_from(buf, 0)[0])

    def __init__(self, buf: memoryview, at: int):
        self.buf = buf
        back = self.int(_I32, at, "its root offset points outside it")
        vtable = at - back
        self.vtable_size = self.int(_U16, vtable, "its table's vtable lies outside it")
        self.size = self.int(_U16, vtable + 2, "its table's vtable lies outside it")
        if self.vtable_size < 4 or self.vtable_size % 2:
            raise ValueError("its table's vtable is malformed")
        if vtable + self.vtable_size > len(buf) or at + self.size > len(buf):
            raise ValueError("its table or vtable runs past its end")
        self.at, self.vtable = at, vtable

    def int(self, kind: struct.Struct, at: int, problem: str) -> int:
        if at < 0 or at + kind.size > len(self.buf):
            raise ValueError(problem)
        return kind.unpack_from(self.buf, at)[0]

    def value(self, number: int, kind: struct.Struct, name: str, default: int) -> int:
        """Scalar field ``number``, or ``default`` where the table leaves it out."""
        at = self.field(number, kind, name)
        return default if at is None else kind.unpack_from(self.buf, at)[0]

    def field(self, number: int, kind: struct.Struct, name: str) -> int | None:
        """Byte offset of field ``number`` (``kind``), or None where the table leaves it out."""
        if 4 + 2 * number + 2 > self.vtable_size:
            return None
        offset = _U16.unpack_from(self.buf, self.vtable + 4 + 2 * number)[0]
        if not offset:
            return None
        if offset + kind.size > self.size:
            raise ValueError(f"its field {name} lies outside its table")
        return self.at + offset

    def vector(self, number: int, name: str, item_bytes: int) -> tuple[int, int]:
        """Byte offset of vector (or string) field ``number``'s first item, and its length."""
        at = self.field(number, _U32, name)
        if at is None:
            return 0, 0
        start = at + _U32.unpack_from(self.buf, at)[0]
        n = self.int(_U32, start, f"its {name} lies outside it")
        if start + 4 + n * item_bytes > len(self.buf):
            raise ValueError(f"its {name} runs past its end")
        return start + 4, n


def _header(stream, path) -> tuple[_Header, int]:
    """The IOHeader and the byte offset of the first packet."""
    start = stream.read(_DESCRIPTION)
    if start[: len(MAGIC)] != MAGIC:
        if MAGIC.startswith(start):
            raise FormatError(path, len(start), "file ends inside the magic line: truncated")
        raise FormatError(path, 0, "not an AEDAT 4.0 file (no '#!AER-DAT4.0' line)")
    if len(start) < _DESCRIPTION:
        raise FormatError(path, len(MAGIC), "the file ends inside its header's length: truncated")
    size = _U32.unpack_from(start, len(MAGIC))[0]
    if size > MAX_PACKET:
        raise FormatError(path, len(MAGIC), f"bad header: {size} bytes, over {MAX_PACKET}")
    buf = stream.read(size)
    if len(buf) < size:
        raise FormatError(path, len(MAGIC), "the file ends inside its header: truncated")
    try:
        table = _Table.root(memoryview(buf))
        codec = table.value(0, _I32, "compression", 0)
        if codec not in range(len(_CODECS)):
            raise ValueError(f"unknown compression {codec}")
        index = table.value(1, _I64, "dataTablePosition", -1)
        text_at, n = table.vector(2, "stream description", 1)
        try:
            text = bytes(buf[text_at : text_at + n]).decode()
        except UnicodeDecodeError as error:
            raise ValueError(
                f"its stream description is not UTF-8 ({error.reason} at byte {error.start})"
            ) from None
        streams = _streams(text)
    except ValueError as error:
        raise FormatError(path, _DESCRIPTION, f"bad header: {error}") from None
    return _Header(codec, index, *streams), _DESCRIPTION + size


def _child(node, tag: str, key: str, name: str):
    return next((c for c in node if c.tag == tag and c.get(key) == name), None)


def _streams(text: str) -> tuple[frozenset[int], int, tuple[int, int], tuple[str, ...]]:
    """From the XML stream description: the streams' ids, the first event stream's id and sensor
    size, and the other streams' types."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ValueError(f"its stream description is not XML ({error})") from None
    outputs = _child(root, "node", "name", "outInfo") if root.tag == "dv" else None
    if outputs is None:
        raise ValueError("its stream description has no <dv><node name='outInfo'>")
    streams = {}
    for node in (c for c in outputs if c.tag == "node"):
        name = node.get("name", "")
        if not (name.isascii() and name.isdigit()) or int(name) >= 1 << 32:
            raise ValueError(f"its stream description names a stream {name!r}, not a stream id")
        kind = _child(node, "attr", "key", "typeIdentifier")
        kind = (kind.text or "").strip() if kind is not None else ""
        streams[int(name)] = (_TYPES.get(kind, kind or "unknown"), node)
    events = sorted(i for i, (kind, _) in streams.items() if kind == "events")
    if not events:
        kinds = ", ".join(streams[i][0] for i in sorted(streams)) or "none"
        raise ValueError(f"it describes no event stream (its streams: {kinds})")
    info = _child(streams[events[0]][1], "node", "name", "info")
    sensor = tuple(_size(info, key) for key in ("sizeX", "sizeY"))
    others = tuple(streams[i][0] for i in sorted(streams) if i != events[0])
    return frozenset(streams), events[0], sensor, others


def _size(info, key: str) -> int:
    attr = _child(info, "attr", "key", key) if info is not None else None
    text = (attr.text or "").strip() if attr is not None else ""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(f"its event stream's {key} is {text!r}, not in 1..65535")
    return int(text)


def _inflate(data: bytes, codec: int) -> bytes:
    """A packet's bytes decompressed (at most ``MAX_PACKET``); a ValueError says what is wrong.
    LZ4's output buffer starts at four times the input (events compress about twice) and
    doubles; a Zstd frame that states its size is checked before it is decompressed."""
    name = _CODECS[codec]
    if name == "none":
        return data
    try:
        if name.startswith("LZ4"):
            decompressor = lz4.frame.LZ4FrameDecompressor()
            out = decompressor.decompress(data, max_length=4 * len(data) + (1 << 16))
            while not (decompressor.eof or decompressor.needs_input) and len(out) <= MAX_PACKET:
                out += decompressor.decompress(b"", max_length=len(out))
            if not decompressor.eof:
                raise ValueError(f"its LZ4 frame ends early or exceeds {MAX_PACKET} bytes")
            return out
        stated = zstandard.get_frame_parameters(data).content_size
        if stated != zstandard.CONTENTSIZE_UNKNOWN and stated > MAX_PACKET:
            raise ValueError(f"its Zstd frame states {stated} bytes, over {MAX_PACKET}")
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_PACKET)
    except (RuntimeError, zstandard.ZstdError) as error:
        raise ValueError(f"its {name} data do not decompress ({error})") from None


def records(buf: bytes) -> np.ndarray:
    """The event records (``RECORD_DTYPE``) of a decompressed event packet."""
    if len(buf) < 12:
        raise ValueError(f"its FlatBuffer is {len(buf)} bytes, fewer than 12")
    size = _U32.unpack_from(buf, 0)[0]
    if not 8 <= size <= len(buf) - 4:
        raise ValueError(f"its FlatBuffer states {size} bytes, not 8..{len(buf) - 4} as it holds")
    if buf[8:12] != b"EVTS":
        raise ValueError(f"its FlatBuffer is {bytes(buf[8:12])!r}, not an event packet (b'EVTS')")
    body = memoryview(buf)[4 : 4 + size]
    table = _Table.root(body)
    start, n = table.vector(0, "events", RECORD_DTYPE.itemsize)
    return np.frombuffer(body, RECORD_DTYPE, count=n, offset=start)


def convert(packet: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``packet``'s records as ``EVENT_DTYPE``; a ValueError names the first bad event."""
    events = np.empty(len(packet), dtype=EVENT_DTYPE)
    for name in EVENT_DTYPE.names:
        events[name] = packet[name]
    bad = (events["t"] < 0) | (events["p"] > 1) | (events["x"] >= size[0])
    bad |= events["y"] >= size[1]
    if bad.any():
        i = int(np.argmax(bad))
        t, x, y, p = (events[name][i] for name in ("t", "x", "y", "p"))
        if t < 0:
            raise ValueError(f"event #{i} has the time {t}, negative as int64")
        if p > 1:
            raise ValueError(f"event #{i} has the polarity byte {p}, not 0 or 1")
        raise ValueError(
            f"event at x={x}, y={y} lies outside the {size[0]}x{size[1]} sensor the stream"
            " description states"
        )
    return events


def _decode(buf: bytes, size: tuple[int, int], out: np.ndarray, start: int, compiled) -> int:
    """Decode the decompressed event packet ``buf`` into ``out[start:]`` (room for
    ``len(buf) // 16`` events) and return how many it holds: with the kernel ``compiled.aedat``,
    or (without numba, or to raise the ValueError for what the kernel refused) ``records`` and
    ``convert``."""
    if compiled is not None:
        n, ok = compiled.aedat(np.frombuffer(buf, np.uint8), *size, out, start)
        if ok:
            return n
    events = convert(records(buf), size)
    out[start : start + len(events)] = events
    return len(events)


def _packets(stream, path, header: _Header, position: int) -> Iterator[tuple[int, bytes]]:
    """The event stream's packets (byte offset, compressed bytes), from byte ``position`` to the
    packet index (or the end)."""
    while position != header.index:
        if 0 <= header.index < position:
            problem = f"packets run past the packet index the header puts at {header.index}"
            raise FormatError(path, position, problem)
        head = stream.read(8)
        if not head:
            return
        if len(head) < 8:
            raise FormatError(path, position, "file ends inside a packet header: truncated")
        stream_id, size = _U32.unpack_from(head, 0)[0], _U32.unpack_from(head, 4)[0]
        if size > MAX_PACKET:
            raise FormatError(path, position, f"packet of {size} bytes, over {MAX_PACKET}")
        data = stream.read(size)
        if len(data) < size:
            problem = f"packet of {size} bytes ends after {len(data)}: truncated"
            raise FormatError(path, position, problem)
        if stream_id == header.stream_id:
            yield position, data
        elif stream_id not in header.stream_ids:
            problem = f"corrupt packet: stream id {stream_id} is not in the stream description"
            raise FormatError(path, position, problem)
        position += 8 + size


def _blocks(
    stream, path, header: _Header, position: int, block_events: int, native: bool
) -> Iterator[np.ndarray]:
    """The events in blocks of whole packets, about ``block_events`` (more for a larger packet);
    from a pipe, each packet as it arrives."""
    compiled = kernels() if native else None
    live = is_pipe(path)
    out, n = np.empty(0, dtype=EVENT_DTYPE), 0
    with stream:
        for offset, data in _packets(stream, path, header, position):
            try:
                buf = _inflate(data, header.codec)
                room = len(buf) // RECORD_DTYPE.itemsize
                if n + room > len(out):
                    if n:
                        yield out[:n]
                    out, n = np.empty(room if live else max(room, block_events), EVENT_DTYPE), 0
                n += _decode(buf, header.size, out, n, compiled)
            except ValueError as error:
                raise FormatError(path, offset, f"corrupt packet: {error}") from None
            if live and n:
                yield out[:n]
                out, n = out[n:], 0
    if n:
        yield out[:n]


def is_pipe(path) -> bool:
    """True when ``path`` is a FIFO (a named pipe)."""
    return stat.S_ISFIFO(os.stat(path).st_mode)


def source(
    path, block_events: int = 1 << 20, native: bool = True, stream: BinaryIO | None = None
) -> EventSource:
    """Open an AEDAT4 file or FIFO: its event stream's size, the other streams, and the events in
    blocks of about ``block_events`` (from a FIFO, packet by packet as they arrive);
    ``native=False`` decodes with numpy only. ``stream``: ``path`` already open at its first
    byte, which the source takes over."""
    stream = stream or open(path, "rb")
    try:
        header, position = _header(stream, path)
    except BaseException:
        stream.close()
        raise
    blocks = _blocks(stream, path, header, position, block_events, native)
    return EventSource("aedat4", blocks, header.size, None, header.other_streams)


def read(path) -> Recording:
    """The whole AEDAT4 file (or everything a FIFO delivers until its writer closes it)."""
    return collect(source(path))


def iter_chunks(path, chunk_events: int = 1_000_000) -> Iterator[np.ndarray]:
    """The events in arrays of ``chunk_events`` (the last may be shorter)."""
    return rechunk(source(path, chunk_events).blocks, chunk_events)


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
