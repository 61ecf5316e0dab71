"""Event-carrying requests serialised straight from the event array.

On its way out through protobuf's Python runtime, a chunk of events is copied three times (the
codec's column bytes, the message's bytes fields, the serialised message). An ``EventChunk``
stands for the one request message that carries a chunk (``ClassifyRequest.events``,
``ClassifyStreamRequest.events``, or an Adapt example's ``AdaptRequest.example``), and
``serialize`` writes its protobuf encoding (tags, lengths, the wire codec's four columns, the
sensor size) with one copy of each column: the same bytes as protobuf's (tested), in a fraction of
the time (``bench/service.py``: ``client_encode_mev_s``); with ``packed``, events that pack go in
the packed encoding instead (8 bytes an event instead of 13). Other messages go through protobuf.
``Stub`` is the generated stub with this serialiser on the three streaming calls; it works on
sync and asyncio channels alike.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikeshot.events.array import check_events
from spikeshot.events.codec import columns, pack
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as rpc

_SERVICE = "/spikeshot.v1.SpikeShot/"
_LEN, _VARINT = 2, 0  # protobuf wire types


class EventChunk(NamedTuple):
    """One chunk of events from a ``width`` x ``height`` sensor, as a request message: an Adapt
    example chunk when ``label`` is not None (with ``end_of_example``), else the events of a
    Classify or ClassifyStream request (both encode them as field 2)."""

    events: np.ndarray
    width: int
    height: int
    label: str | None = None
    end_of_example: bool = False

    @classmethod
    def of(cls, events: np.ndarray, width: int, height: int) -> EventChunk:
        """A query or stream chunk; raises ``EventError`` unless ``events`` is an event array."""
        check_events(events)
        return cls(events, width, height)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, parts: list, size: int) -> list:
    """``parts`` (``size`` bytes in all) as field ``field`` of the enclosing message."""
    return [_key(field, _LEN), _varint(size), *parts]


def _size(parts: list) -> int:
    return sum(memoryview(p).nbytes for p in parts)


def _events_parts(chunk: EventChunk, packed: bool) -> list:
    """The parts of an ``Events`` message in field order (proto3: zero values are left out), in
    the packed encoding if ``packed`` and the events pack."""
    sensor = []
    for field, value in ((5, chunk.width), (6, chunk.height)):
        if value:
            sensor += [_key(field, _VARINT), _varint(value)]
    packing = pack(chunk.events) if packed and len(chunk.events) else None
    if packing is not None:
        origin, *views = packing
        if origin:
            sensor += [_key(7, _VARINT), _varint(origin % 2**64)]  # int64: two's complement
        return sensor + _columns(enumerate(views, 8))
    return _columns(enumerate(columns(chunk.events), 1)) + sensor


def _columns(fields) -> list:
    """The parts of ``(field, array)`` columns, each written as it is (its bytes, not a copy)."""
    parts: list = []
    for field, view in fields:
        column = np.ascontiguousarray(view)
        if column.nbytes:
            parts += _length_delimited(field, [column], column.nbytes)
    return parts


def serialize(message, packed: bool = False) -> bytes:
    """The wire bytes of a request message: an ``EventChunk`` written directly (its events
    packed where ``packed`` and they pack), anything else by protobuf."""
    if not isinstance(message, EventChunk):
        return message.SerializeToString()
    events = _events_parts(message, packed)
    if message.label is None:
        return b"".join(_length_delimited(2, events, _size(events)))
    label = message.label.encode()
    example = [] if not label else _length_delimited(1, [label], len(label))
    example += _length_delimited(2, events, _size(events))
    if message.end_of_example:
        example += [_key(4, _VARINT), b"\x01"]
    return b"".join(_length_delimited(2, example, _size(example)))


class Stub(rpc.SpikeShotStub):
    """The generated stub, with ``serialize`` on Adapt, Classify and ClassifyStream; events go
    packed once ``packed`` is set True (None until the client knows what the server takes)."""

    def __init__(self, channel):
        super().__init__(channel)
        self.packed: bool | None = None
        self.Adapt = channel.stream_unary(
            _SERVICE + "Adapt",
            request_serializer=self._serialize,
            response_deserializer=pb.AdaptResponse.FromString,
        )
        self.Classify = channel.stream_unary(
            _SERVICE + "Classify",
            request_serializer=self._serialize,
            response_deserializer=pb.ClassifyResponse.FromString,
        )
        self.ClassifyStream = channel.stream_stream(
            _SERVICE + "ClassifyStream",
            request_serializer=self._serialize,
            response_deserializer=pb.ClassifyStreamResponse.FromString,
        )

    def _serialize(self, message) -> bytes:
        return serialize(message, bool(self.packed))
