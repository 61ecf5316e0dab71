"""Requests' events or frames -> the model's input frames ``[bins, 2, height, width]`` (numpy only).

Events of any sensor are mapped to the model card's geometry by one rule:

1. Validate them against the sending sensor's size (``Limits``): coordinates inside it, polarity
   0/1, timestamps that never decrease (also across the chunks of one example, query or stream)
   and are at most ``MAX_TIMESTAMP_US`` (so that every window edge fits int64).
2. If the sensor differs from the card's sensor, take the largest centred region of it with the
   card sensor's aspect ratio (``sensor_region``; the excess columns or rows are split evenly on
   both sides, an odd one going to the right or bottom) and scale coordinates from that region to
   the card's sensor: ``x' = (x - x0) * card_width // region_width``, likewise for y. Events outside
   the region are dropped; a larger sensor is thereby downsampled (counts of merged pixels add up),
   a smaller one upsampled (each pixel lands on one card pixel, leaving gaps).
3. Bin with the card's geometry (its crop, downsample and time bins): the window starts at the
   first event and lasts the card's ``window_us``; later events are ignored.

Frames a client binned itself must already have the model's shape; values are finite and in
``0..max_events`` (no count of one example's events is larger).

An example or query with no event inside the model's view (window and crop) is an error, as is an
example of no events at all. Errors are ``InvalidArgument`` naming where (example, chunk), the
field and the first bad index.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from spikeshot.events.array import EventColumns, EventError, Limits, validate
from spikeshot.events.binning import FrameGeometry, bin_events
from spikeshot.events.codec import EncodedEvents, decode_columns
from spikeshot.service.errors import InvalidArgument, check_text, echo

FRAME_TYPES = {"float32": np.dtype("<f4"), "uint16": np.dtype("<u2")}
MAX_SENSOR = 65535
# Bounds that keep every window edge of a stream within int64 (``ClassifyStreamResponse``'s).
MAX_TIMESTAMP_US = 2**62
MAX_WINDOW_US = 3_600_000_000  # one hour, for window_us and hop_us
# Chunks of fewer events are concatenated up to this many before binning, so that each
# ``bin_events`` call's fixed cost is spread over enough events.
PIECE_EVENTS = 1 << 16


@dataclass(frozen=True)
class EventInput:
    """Events of one camera: an ``EVENT_DTYPE`` array, or the wire codec's four columns."""

    events: np.ndarray | EncodedEvents
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


@dataclass(frozen=True)
class Window:
    """One window of a stream: ``[start_us, end_us)``, its frames and event count; ``complete`` is
    False for a window cut short by the end of the stream. ``decode_ms`` covers the chunks decoded
    since the previous window, ``bin_ms`` this window's mapping and binning."""

    start_us: int
    end_us: int
    frames: np.ndarray
    events: int
    complete: bool
    decode_ms: float
    bin_ms: float


def frames_from_bytes(data: bytes, bins: int, height: int, width: int, type: str) -> np.ndarray:
    """The frames of the wire's ``Frames`` message (``type``: "float32" or "uint16")."""
    if type not in FRAME_TYPES:
        raise InvalidArgument(
            f"frames.type must be one of {sorted(FRAME_TYPES)}, got {type!r}", "frames.type"
        )
    for name, size in (("bins", bins), ("height", height), ("width", width)):
        if size < 1:
            raise InvalidArgument(f"frames.{name} must be positive, got {size}", f"frames.{name}")
    dt = FRAME_TYPES[type]
    shape = (bins, 2, height, width)
    expected = math.prod(shape) * dt.itemsize  # Python integers: no overflow
    if len(data) != expected:
        raise InvalidArgument(
            f"frames.data: {len(data)} bytes, but {list(shape)} {type} values take {expected}",
            "frames.data",
        )
    return np.frombuffer(data, dtype=dt).reshape(shape)


def sensor_region(width: int, height: int, card_width: int, card_height: int):
    """``(x0, y0, w, h)``: the largest centred region of a ``width`` x ``height`` sensor with the
    aspect ratio ``card_width : card_height``."""
    if width * card_height >= height * card_width:
        w, h = max(1, height * card_width // card_height), height
    else:
        w, h = width, max(1, width * card_height // card_width)
    return (width - w) // 2, (height - h) // 2, w, h


@dataclass(frozen=True)
class MappedEvents:
    """Events in the card sensor's coordinates; ``inside`` marks those inside the sensor region
    (None: all are). The others are kept, at x = card width or y = card height: off the card's
    sensor, so binning drops them."""

    events: EventColumns
    inside: np.ndarray | None

    def __getitem__(self, key: slice) -> MappedEvents:
        return MappedEvents(self.events[key], None if self.inside is None else self.inside[key])

    def __len__(self) -> int:
        return len(self.events)

    def count(self) -> int:
        """How many events are inside the sensor region."""
        return len(self.events) if self.inside is None else int(np.count_nonzero(self.inside))


def _scale(coord: np.ndarray, start: int, size: int, card: int) -> np.ndarray:
    """``(coord - start) * card // size`` as uint16 for ``start <= coord < start + size``, else
    ``card``; unsigned wrap-around sends ``coord < start`` past ``size``."""
    out = np.subtract(coord, start, dtype=np.uint16 if size * card < 65536 else np.uint32)
    np.minimum(out, size, out=out)
    out *= card
    out //= size
    return out.astype(np.uint16, copy=False)


def map_to_sensor(
    events, width: int, height: int, card_width: int, card_height: int
) -> MappedEvents:
    """Events (an event array or ``EventColumns``) of a ``width`` x ``height`` sensor in the
    coordinates of the card's sensor (step 2 of the module's rule), copying only what changes."""
    columns = EventColumns(events["t"], events["x"], events["y"], events["p"])
    if (width, height) == (card_width, card_height):
        return MappedEvents(columns, None)
    x0, y0, w, h = sensor_region(width, height, card_width, card_height)
    x = _scale(columns.x, x0, w, card_width)
    y = _scale(columns.y, y0, h, card_height)
    # The region spans the sensor's full width or its full height: one axis at most drops events.
    inside = x < card_width if w < width else y < card_height if h < height else None
    return MappedEvents(EventColumns(columns.t, x, y, columns.p), inside)


def _before(t: np.ndarray, end: int) -> int:
    """How many of the (non-empty, sorted) timestamps ``t`` are before ``end``."""
    return 0 if t[0] >= end else len(t) if t[-1] < end else int(np.searchsorted(t, end))


class _Pieces:
    """Groups mapped chunks, in order, into pieces of at least ``PIECE_EVENTS`` events (but the
    last): a chunk that large is a piece of its own, smaller ones are concatenated."""

    def __init__(self):
        self.small: list[MappedEvents] = []
        self.count = 0

    def add(self, mapped: MappedEvents) -> list[MappedEvents]:
        """The pieces that ``mapped`` completes."""
        if len(mapped) >= PIECE_EVENTS:
            return [*self.flush(), mapped]
        self.small.append(mapped)
        self.count += len(mapped)
        return self.flush() if self.count >= PIECE_EVENTS else []

    def flush(self) -> list[MappedEvents]:
        """The small chunks added since the last piece, as one piece (none if there are none)."""
        small, self.small, self.count = self.small, [], 0
        if len(small) < 2:
            return small
        events = EventColumns(*(np.concatenate([m.events[f] for m in small]) for f in "txyp"))
        inside = None if small[0].inside is None else np.concatenate([m.inside for m in small])
        return [MappedEvents(events, inside)]


def _invalid(where: str, error: EventError) -> InvalidArgument:
    field = "events" if error.field == "events" else f"events.{error.field}"
    return InvalidArgument(f"{where}: {error}", field, error.index)


class _Reader:
    """Decodes the event chunks of one example, query or stream, checking that the sensor stays
    the same and that timestamps do not decrease across chunks."""

    def __init__(self, what: str, max_events: int):
        self.what, self.max_events = what, max_events
        self.sensor: tuple[int, int] | None = None
        self.last_t: int | None = None

    def read(self, data: EventInput, where: str) -> EventColumns:
        sensor = (data.sensor_width, data.sensor_height)
        for name, size in zip(("sensor_width", "sensor_height"), sensor, strict=True):
            if not 1 <= size <= MAX_SENSOR:
                raise InvalidArgument(
                    f"{where}: events.{name} must be in 1..{MAX_SENSOR}, got {size}",
                    f"events.{name}",
                )
        if self.sensor not in (None, sensor):
            raise InvalidArgument(
                f"{where}: the sensor size changed from {self.sensor} to "
                f"{sensor} within one {self.what}",
                "events.sensor_width",
            )
        self.sensor = sensor
        events = data.events
        try:
            if not isinstance(events, np.ndarray):
                events = decode_columns(*events)
            events = validate(events, Limits(*sensor, self.max_events, allow_empty=True))
            t = events["t"]
            if len(t) and self.last_t is not None and t[0] < self.last_t:
                raise EventError("t", "timestamps must not decrease across chunks", 0)
            if len(t) and t[-1] > MAX_TIMESTAMP_US:
                index = int(np.searchsorted(t, MAX_TIMESTAMP_US, "right"))
                raise EventError(
                    "t", f"timestamps must be at most 2^62 ({MAX_TIMESTAMP_US})", index
                )
        except EventError as e:
            raise _invalid(where, e) from None
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
        raise InvalidArgument(
            f"{where}: frames have shape {list(frames.shape)}, the model takes "
            f"[bins, 2, height, width] = {list(geometry.shape)}",
            "frames.shape",
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

    def __init__(self, geometry: FrameGeometry, max_events: int, where: str):
        self.geometry, self.max_events, self.where = geometry, max_events, where
        self.pieces = _Pieces()
        self.counts = np.zeros(geometry.shape, np.int64)
        self.events = 0
        self.frames: np.ndarray | None = None
        self.reader = _Reader("example or query", max_events)
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
            events = events[: _before(events.t, self.t0 + g.window_us)]
            if len(events):
                self._bin(
                    self.pieces.add(
                        map_to_sensor(events, *self.reader.sensor, g.sensor_width, g.sensor_height)
                    )
                )
        self.bin_ms += 1000.0 * (time.perf_counter() - mid)

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


def examples(chunks: Iterable[Chunk], geometry: FrameGeometry, max_events: int) -> Iterator[Sample]:
    """The support examples of an ``Adapt`` stream, one ``Sample`` as each example ends."""
    builder, label, index = None, "", 0
    for chunk in chunks:
        check_text(chunk.label, "label", f"example {index}: ")
        if builder is None:
            where = f"example {index}" + (f" ({echo(chunk.label)})" if chunk.label else "")
            if not chunk.label:
                raise InvalidArgument(
                    f"{where}: the first chunk of an example needs a label", "label"
                )
            builder, label = _Builder(geometry, max_events, where), chunk.label
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


def query(parts: Iterable[Input], geometry: FrameGeometry, max_events: int) -> Sample:
    """The one query of a ``Classify`` stream: its chunks concatenated."""
    builder = _Builder(geometry, max_events, "query")
    for data in parts:
        builder.add(data)
    return builder.finish("")


class Windower:
    """Cuts a live event stream into windows (the windowing of ``StreamConfig`` in the .proto).

    Window k covers ``[t0 + k * hop_us, t0 + k * hop_us + window_us)``, ``t0`` the stream's first
    timestamp, and is ready once an event at or past its end has arrived; ``finish`` also gives
    the windows that began but did not end. Windows without events are skipped. ``window_us``
    (default: the card's) is split into the model's bins; ``hop_us`` (default: the window) is at
    least one bin; both are at most ``MAX_WINDOW_US``. At most ``max_events`` events may wait in
    unfinished windows, held where they can be as views of the pushed chunks (do not modify those
    meanwhile).
    """

    def __init__(
        self,
        geometry: FrameGeometry,
        max_events: int,
        window_us: int | None = None,
        hop_us: int | None = None,
    ):
        window = window_us or geometry.window_us
        if window < geometry.bins or window % geometry.bins:
            raise InvalidArgument(
                f"window_us={window} is not a positive multiple of the model's "
                f"{geometry.bins} bins",
                "window_us",
            )
        self.hop = hop_us or window
        for name, value in (("window_us", window), ("hop_us", self.hop)):
            if value > MAX_WINDOW_US:
                raise InvalidArgument(
                    f"{name}={value} exceeds the limit of {MAX_WINDOW_US} (one hour)", name
                )
        self.geometry = dataclasses.replace(geometry, window_us=window)
        if self.hop < self.geometry.bin_us:
            raise InvalidArgument(
                f"hop_us={self.hop} is shorter than one time bin ({self.geometry.bin_us} us)",
                "hop_us",
            )
        self.max_events = max_events
        self.buffer: deque[MappedEvents] = deque()  # from the first unfinished window on
        self.pieces = _Pieces()  # the buffer's newest events, until a window needs them
        self.held = 0  # buffered events inside the sensor region
        self.reader = _Reader("stream", max_events)
        self.t0: int | None = None
        self.next = 0
        self.chunks = 0
        self.decode_ms = self.bin_ms = 0.0

    def push(self, data: EventInput) -> list[Window]:
        """Add a chunk of events; return the windows it completes."""
        where = f"chunk {self.chunks}"
        self.chunks += 1
        start = time.perf_counter()
        events = self.reader.read(data, where)
        mid = time.perf_counter()
        self.decode_ms += 1000.0 * (mid - start)
        if not len(events):
            return []
        if self.t0 is None:
            self.t0 = int(events.t[0])
        g = self.geometry
        events = events[_before(events.t, self.t0 + self.next * self.hop) :]  # before: no window
        if len(events):
            mapped = map_to_sensor(events, *self.reader.sensor, g.sensor_width, g.sensor_height)
            self.buffer.extend(self.pieces.add(mapped))
            self.held += mapped.count()
        self.bin_ms += 1000.0 * (time.perf_counter() - mid)
        ready = self._windows(final=False)
        if self.held > self.max_events:
            raise InvalidArgument(
                f"{where}: more than {self.max_events} events within one window", "events"
            )
        return ready

    def finish(self) -> list[Window]:
        """The windows that began before the stream ended and are not yet given."""
        return self._windows(final=True)

    def _windows(self, final: bool) -> list[Window]:
        out: list[Window] = []
        if self.t0 is None:
            return out
        g, window, last = self.geometry, self.geometry.window_us, self.reader.last_t
        while True:
            begin = self.t0 + self.next * self.hop
            end = begin + window
            if begin > last or (last < end and not final):
                self._drop_before(begin)
                return out
            self.buffer.extend(self.pieces.flush())
            self._drop_before(begin)
            if not self.buffer:
                return out
            first = int(self.buffer[0].events.t[0])
            if first >= end:  # no event in this window: go to the first window that has one
                self.next = max(self.next + 1, (first - self.t0 - window) // self.hop + 1)
                continue
            start = time.perf_counter()
            counts, count = np.zeros(g.shape, np.int64), 0
            for piece in self.buffer:
                piece = piece[: _before(piece.events.t, end)]
                if not len(piece):
                    break
                counts += bin_events(piece.events, g, t0=begin, dtype=np.int64)
                count += piece.count()
            self.bin_ms += 1000.0 * (time.perf_counter() - start)
            out.append(
                Window(
                    begin,
                    end,
                    counts.astype(np.float32),
                    count,
                    last >= end,
                    self.decode_ms,
                    self.bin_ms,
                )
            )
            self.decode_ms = self.bin_ms = 0.0
            self.next += 1

    def _drop_before(self, begin: int) -> None:
        """Drop the buffered events before ``begin``, then those outside the sensor region up to
        the first one inside it: the buffer starts with an event of the model's sensor."""
        while self.buffer:
            piece = self.buffer[0]
            k = _before(piece.events.t, begin)
            if piece.inside is not None and k < len(piece):
                first = k + int(np.argmax(piece.inside[k:]))
                k = first if piece.inside[first] else len(piece)
            if not k:
                return
            self.held -= piece[:k].count()
            if k < len(piece):
                self.buffer[0] = piece[k:]
                return
            self.buffer.popleft()
