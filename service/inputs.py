"""Requests' events or frames -> the model's input frames ``[bins, 2, height, width]`` (numpy only).

Events of any sensor are mapped to the model card's geometry by one rule:

1. Validate them against the sending sensor's size (``Limits``): coordinates inside it, polarity
   0/1, timestamps that never decrease (also across the chunks of one example, query or stream)
   and are at most ``MAX_TIMESTAMP_US`` (so that every window edge fits int64).
2. If the sensor differs from the card's sensor, map them to it (``events.mapping``): the largest
   centred region of the card sensor's aspect ratio is scaled to the card's sensor, events outside
   it are dropped.
3. Bin with the card's geometry (its crop, downsample and time bins): the window starts at the
   first event and lasts the card's ``window_us``; later events are ignored.

Frames a client binned itself must already have the model's shape; values are finite and in
``0..max_events`` (no count of one example's events is larger).

An example or query with no event inside the model's view (window and crop) is an error, as is an
example of no events at all. Errors are ``InvalidArgument`` naming where (example, chunk), the
field and the first bad index. A live stream's windows are cut by ``service.windows``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from spikeshot.events.array import EventColumns, EventError, Limits, check_events, validate
from spikeshot.events.binning import FrameGeometry, bin_events
from spikeshot.events.codec import (
    EncodedEvents,
    PackedColumns,
    PackedEvents,
    decode_columns,
    packed_columns,
)
from spikeshot.events.mapping import (
    MappedEvents,
    Pieces,
    count_before,
    map_to_sensor,
    pixel_tables,
)
from spikeshot.events.recording import kernels
from spikeshot.service.errors import InvalidArgument, check_text, echo

MAX_SENSOR = 65535
# Bounds that keep every window edge of a stream within int64 (``ClassifyStreamResponse``'s).
MAX_TIMESTAMP_US = 2**62
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class EventInput:
    """Events of one camera: an ``EVENT_DTYPE`` array, or the wire codec's columns (four, or
    packed)."""

    events: np.ndarray | EncodedEvents | PackedEvents
    sensor_width: int
    sensor_height: int


@dataclass(frozen=True)
class FrameInput:
    """Frames ``[bins, 2, height, width]`` in the model's geometry (any real dtype)."""

    frames: np.ndarray


Input = EventInput | FrameInput


@dataclass(frozen=True)
class Chunk:
    """A piece of one support example: its label (required on the example's first chunk), data,
    and whether it is the example's last chunk. The defaults make one chunk a whole example."""

    label: str = ""
    data: Input | None = None
    end_of_example: bool = True


@dataclass(frozen=True)
class Sample:
    """One example or query in the model's geometry. ``frames`` is float32; ``events`` counts the
    events inside the window (0 for frames); the times are of this sample's decoding and binning."""

    label: str
    frames: np.ndarray
    events: int
    decode_ms: float
    bin_ms: float


def frames_from_bytes(
    data: bytes, bins: int, height: int, width: int, dtype: np.dtype
) -> np.ndarray:
    """The frames of the wire's ``Frames`` message, values of ``dtype`` (its ``FrameType``'s)."""
    for name, size in (("bins", bins), ("height", height), ("width", width)):
        if size < 1:
            raise InvalidArgument(f"frames.{name} must be positive, got {size}", f"frames.{name}")
    shape = (bins, 2, height, width)
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    if len(data) != expected:
        raise InvalidArgument(
            f"frames.data: {len(data)} bytes, but bins x 2 x height x width = {list(shape)} "
            f"values of {dtype.itemsize} bytes take {expected}",
            "frames.data",
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


# The packed encoding's field for each column (``spikeshot.events.codec``).
_PACKED_FIELDS = {"t": "dt", "x": "xyp", "y": "xyp", "p": "xyp"}


def _invalid(where: str, error: EventError, packed: bool = False) -> InvalidArgument:
    """``error`` as the request's, named in the encoding's fields (``packed``: a packed chunk's,
    whose coordinates and polarities share ``xyp``)."""
    if packed and error.field in _PACKED_FIELDS:
        rule = error.rule if error.field == "t" else f"{error.field} {error.rule}"
        error = EventError(_PACKED_FIELDS[error.field], rule, error.index)
    field = "events" if error.field == "events" else f"events.{error.field}"
    return InvalidArgument(f"{where}: {error}", field, error.index)


def kernel_columns(cols: EventColumns | PackedColumns) -> tuple[int, np.ndarray, tuple]:
    """A chunk's ``t_origin`` (0 but packed), its timestamp column, and the first six arguments
    of the fused kernels (``native.ingest``, ``native.map_chunk``)."""
    if isinstance(cols, PackedColumns):
        return cols.t_origin, cols.dt, (True, cols.t_origin, cols.dt, cols.xyp, cols.xyp, cols.xyp)
    return 0, cols.t, (False, 0, cols.t, cols.x, cols.y, cols.p)


class Reader:
    """Decodes the event chunks of one example, query or stream, checking that the sensor stays
    the same and that timestamps do not decrease across chunks."""

    def __init__(self, what: str, max_events: int):
        self.what, self.max_events = what, max_events
        self.sensor: tuple[int, int] | None = None
        self.last_t: int | None = None

    def columns(self, data: EventInput, where: str) -> EventColumns | PackedColumns:
        """The chunk's columns as they are (decoded without a copy), after checking its sensor
        size: in range, and the same as the chunks' before."""
        sensor = (data.sensor_width, data.sensor_height)
        for name, size in zip(("sensor_width", "sensor_height"), sensor, strict=True):
            if not 1 <= size <= MAX_SENSOR:
                raise InvalidArgument(
                    f"{where}: events.{name} must be in 1..{MAX_SENSOR}, got {size}",
                    f"events.{name}",
                )
        if self.sensor not in (None, sensor):
            raise InvalidArgument(
                f"{where}: events.sensor_width x sensor_height changed from "
                f"{self.sensor[0]}x{self.sensor[1]} to {sensor[0]}x{sensor[1]} within one "
                f"{self.what}",
                "events.sensor_width",
            )
        self.sensor = sensor
        events = data.events
        try:
            if isinstance(events, PackedEvents):
                return packed_columns(*events)
            if not isinstance(events, np.ndarray):
                return decode_columns(*events)
            check_events(events)
        except EventError as e:
            raise _invalid(where, e, isinstance(events, PackedEvents)) from None
        return EventColumns(events["t"], events["x"], events["y"], events["p"])

    def limits(self) -> tuple[tuple[int, int, int], int]:
        """What the fused kernels check a chunk against: (the sensor of the chunks read so far,
        the largest timestamp), and the last timestamp before the chunk."""
        previous = INT64_MIN if self.last_t is None else self.last_t
        return (*self.sensor, MAX_TIMESTAMP_US), previous

    def read(self, data: EventInput, where: str) -> EventColumns:
        """The chunk's columns, validated against its sensor and the chunks before."""
        events = self.columns(data, where)
        packed = isinstance(events, PackedColumns)
        if packed:
            events = events.unpack()
        try:
            events = validate(events, Limits(*self.sensor, self.max_events, allow_empty=True))
            t = events["t"]
            if len(t) and self.last_t is not None and t[0] < self.last_t:
                raise EventError("t", "timestamps must not decrease across chunks", 0)
            if len(t) and t[-1] > MAX_TIMESTAMP_US:
                index = int(np.searchsorted(t, MAX_TIMESTAMP_US, "right"))
                raise EventError(
                    "t", f"timestamps must be at most 2^62 ({MAX_TIMESTAMP_US})", index
                )
        except EventError as e:
            raise _invalid(where, e, packed) from None
        if len(t):
            self.last_t = int(t[-1])
        return EventColumns(t, events["x"], events["y"], events["p"])


def check_frames(
    frames: np.ndarray, geometry: FrameGeometry, max_count: int, where: str
) -> np.ndarray:
    """Frames as float32 of the model's shape, each value finite and in ``0..max_count`` (a
    count of one example's events)."""
    frames = np.asarray(frames)
    if frames.shape != geometry.shape:
        got = " x ".join(map(str, frames.shape))
        raise InvalidArgument(
            f"{where}: frames have shape {got}, the model takes bins x 2 x height x width = "
            f"{' x '.join(map(str, geometry.shape))}",
            "frames.bins",
        )
    if frames.dtype.kind not in "iuf":
        raise InvalidArgument(
            f"{where}: frames must hold real numbers, got {frames.dtype}", "frames.data"
        )
    frames = frames.astype(np.float32)
    bad = ~((frames >= 0) & (frames <= max_count))  # NaN is neither
    if bad.any():
        index = int(np.argmax(bad.ravel()))
        raise InvalidArgument(
            f"{where}: frames.data must be finite and in 0..{max_count} (first bad index {index})",
            "frames.data",
            index,
        )
    return frames


class _Builder:
    """The chunks of one example or query, turned into a ``Sample``: the events of each chunk
    inside the window are mapped as it arrives and binned piece by piece, the counts summed."""

    def __init__(self, geometry: FrameGeometry, max_events: int, where: str, native: bool):
        self.geometry, self.max_events, self.where = geometry, max_events, where
        self.native = kernels() if native else None
        self.pieces = Pieces()
        self.counts = np.zeros(geometry.shape, np.int64)
        self.events = 0
        self.frames: np.ndarray | None = None
        self.reader = Reader("example or query", max_events)
        self.received = 0
        self.chunks = 0
        self.t0: int | None = None
        self.decode_ms = self.bin_ms = 0.0

    def add(self, data: Input) -> None:
        where = f"{self.where}, chunk {self.chunks}"
        if self.frames is not None or (isinstance(data, FrameInput) and self.chunks):
            raise InvalidArgument(
                f"{where}: frames cannot share an example or query with other data chunks", "frames"
            )
        self.chunks += 1
        start = time.perf_counter()
        if isinstance(data, FrameInput):
            self.frames = check_frames(data.frames, self.geometry, self.max_events, where)
            self.decode_ms += 1000.0 * (time.perf_counter() - start)
            return
        if self.native is not None and self._ingest(self.native, data, where):
            return
        events = self.reader.read(data, where)
        if self.received + len(events) > self.max_events:
            error = EventError(
                "events",
                f"more than {self.max_events} events in one example or query",
                self.max_events - self.received,
            )
            raise _invalid(where, error)
        self.received += len(events)
        mid = time.perf_counter()
        self.decode_ms += 1000.0 * (mid - start)
        if len(events):
            g = self.geometry
            if self.t0 is None:
                self.t0 = int(events.t[0])
            events = events[: count_before(events.t, self.t0 + g.window_us)]
            if len(events):
                self._bin(
                    self.pieces.add(
                        map_to_sensor(events, *self.reader.sensor, g.sensor_width, g.sensor_height)
                    )
                )
        self.bin_ms += 1000.0 * (time.perf_counter() - mid)

    def _ingest(self, native: ModuleType, data: EventInput, where: str) -> bool:
        """Validate, map and bin a chunk in one pass of the fused kernel (``native.ingest``,
        which releases the interpreter lock); False, with nothing changed, when the chunk breaks
        a rule, which the reference path then names."""
        start = time.perf_counter()
        origin, t, wire = kernel_columns(self.reader.columns(data, where))
        mid = time.perf_counter()
        n = len(t)
        if not n or self.received + n > self.max_events:
            return False
        g = self.geometry
        t0 = origin + int(t[0]) if self.t0 is None else self.t0
        scratch = np.zeros_like(self.counts)
        ok, _, inside = native.ingest(
            *wire,
            *self.reader.limits(),
            *pixel_tables(*self.reader.sensor, g),
            t0,
            min(t0 + g.window_us, INT64_MAX),
            g.bin_us,
            scratch,
        )
        if not ok:
            return False
        self.counts += scratch
        self.events += inside
        self.received += n
        self.t0, self.reader.last_t = t0, origin + int(t[-1])
        self.decode_ms += 1000.0 * (mid - start)  # validation is timed with the binning here
        self.bin_ms += 1000.0 * (time.perf_counter() - mid)
        return True

    def _bin(self, pieces: list[MappedEvents]) -> None:
        for piece in pieces:
            self.counts += bin_events(piece.events, self.geometry, t0=self.t0, dtype=np.int64)
            self.events += piece.count()

    def finish(self, label: str) -> Sample:
        if self.frames is not None:
            frames, count = self.frames, 0
        elif not self.received:
            raise InvalidArgument(f"{self.where}: no events", "events")
        else:
            start = time.perf_counter()
            self._bin(self.pieces.flush())
            frames, count = self.counts.astype(np.float32), self.events
            self.bin_ms += 1000.0 * (time.perf_counter() - start)
        if not frames.any():
            raise InvalidArgument(
                f"{self.where}: no event falls inside the model's view (its crop and window)",
                "events",
            )
        return Sample(label, frames, count, self.decode_ms, self.bin_ms)


def examples(
    chunks: Iterable[Chunk], geometry: FrameGeometry, max_events: int, *, native: bool = True
) -> Iterator[Sample]:
    """The support examples of an ``Adapt`` stream, one ``Sample`` as each example ends
    (``native``: through the fused kernel where numba is installed; else numpy, the reference)."""
    builder, label, index = None, "", 0
    for chunk in chunks:
        check_text(chunk.label, "label", f"example {index}: ")
        if builder is None:
            where = f"example {index}" + (f" ({echo(chunk.label)})" if chunk.label else "")
            if not chunk.label:
                raise InvalidArgument(
                    f"{where}: the first chunk of an example needs a label", "label"
                )
            builder, label = _Builder(geometry, max_events, where, native), chunk.label
        elif chunk.label and chunk.label != label:
            raise InvalidArgument(
                f"{builder.where}: label changed to {echo(chunk.label)} within one example (set "
                "end_of_example on an example's last chunk)",
                "label",
            )
        if chunk.data is not None:
            builder.add(chunk.data)
        if chunk.end_of_example:
            yield builder.finish(label)
            builder, index = None, index + 1
    if builder is not None:
        raise InvalidArgument(
            f"{builder.where}: the stream ended inside this example (set "
            "end_of_example on its last chunk)",
            "end_of_example",
        )


def query(
    parts: Iterable[Input], geometry: FrameGeometry, max_events: int, *, native: bool = True
) -> Sample:
    """The one query of a ``Classify`` stream: its chunks concatenated."""
    builder = _Builder(geometry, max_events, "query", native)
    for data in parts:
        builder.add(data)
    return builder.finish("")
