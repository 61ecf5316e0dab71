"""A live event stream cut into windows, each binned into the model's frames (the windowing of
``StreamConfig`` in the .proto; numpy only). Events are validated and mapped to the card's sensor as
``inputs`` does for examples and queries."""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from spikeshot.events.array import EventColumns
from spikeshot.events.binning import FrameGeometry, bin_events
from spikeshot.events.mapping import (
    MappedEvents,
    Pieces,
    coordinate_tables,
    count_before,
    frame_tables,
    map_to_sensor,
    sensor_region,
)
from spikeshot.events.recording import kernels
from spikeshot.service.errors import InvalidArgument
from spikeshot.service.inputs import EventInput, Reader, kernel_columns

MAX_WINDOW_US = 3_600_000_000  # one hour, for window_us and hop_us


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


class Windower:
    """Cuts a live event stream into windows (the windowing of ``StreamConfig`` in the .proto).

    Window k covers ``[t0 + k * hop_us, t0 + k * hop_us + window_us)``, ``t0`` the stream's first
    timestamp, and is ready once an event at or past its end has arrived; ``finish`` also gives
    the windows that began but did not end. Windows without events are skipped. ``window_us``
    (default: the card's) is split into the model's bins; ``hop_us`` (default: the window) is at
    least one bin; both are at most ``MAX_WINDOW_US``. At most ``max_events`` events may wait in
    unfinished windows, held where they can be as views of the pushed chunks (do not modify those
    meanwhile). ``native``: validate and map each chunk in one pass of a fused kernel
    (``native.map_chunk``), and bin each window with another (``native.bin_mapped``), where numba
    is installed; else numpy, the reference.
    """

    def __init__(
        self,
        geometry: FrameGeometry,
        max_events: int,
        window_us: int | None = None,
        hop_us: int | None = None,
        *,
        native: bool = True,
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
        self.native = kernels() if native else None
        self.buffer: deque[MappedEvents] = deque()  # from the first unfinished window on
        self.pieces = Pieces()  # the buffer's newest events, until a window needs them
        self.held = 0  # buffered events inside the sensor region
        self.reader = Reader("stream", max_events)
        self.t0: int | None = None
        self.next = 0
        self.chunks = 0
        self.decode_ms = self.bin_ms = 0.0

    def push(self, data: EventInput) -> list[Window]:
        """Add a chunk of events; return the windows it completes."""
        where = f"chunk {self.chunks}"
        self.chunks += 1
        start = time.perf_counter()
        mapped = None if self.native is None else self._map_native(data, where)
        if mapped is None:  # the reference: no kernel, no events, or a rule broken (named here)
            events = self.reader.read(data, where)
            self.decode_ms += 1000.0 * (time.perf_counter() - start)
            if not len(events):
                return []
            if self.t0 is None:
                self.t0 = int(events.t[0])
            g = self.geometry
            mapped = map_to_sensor(events, *self.reader.sensor, g.sensor_width, g.sensor_height)
        mid = time.perf_counter()
        # events before the next window belong to none
        mapped = mapped[count_before(mapped.events.t, self.t0 + self.next * self.hop) :]
        if len(mapped):
            self.buffer.extend(self.pieces.add(mapped))
            self.held += mapped.count()
        self.bin_ms += 1000.0 * (time.perf_counter() - mid)
        ready = self._windows(final=False)
        if self.held > self.max_events:
            raise InvalidArgument(
                f"{where}: more than {self.max_events} events within one window", "events"
            )
        return ready

    def _map_native(self, data: EventInput, where: str) -> MappedEvents | None:
        """The chunk validated and mapped to the card's sensor by the fused kernel (which
        releases the interpreter lock); None, with nothing changed, for a chunk without events or
        one that breaks a rule."""
        start = time.perf_counter()
        _, t, wire = kernel_columns(self.reader.columns(data, where))
        n = len(t)
        if not n:
            return None
        g, sensor = self.geometry, self.reader.sensor
        card = (g.sensor_width, g.sensor_height)
        out = EventColumns(
            np.empty(n, np.int64),
            np.empty(n, np.uint16),
            np.empty(n, np.uint16),
            np.empty(n, np.uint8),
        )
        inside = np.empty(n, bool)
        tables = coordinate_tables(*sensor, *card)
        columns = (out.t, out.x, out.y, out.p)
        if not self.native.map_chunk(*wire, *self.reader.limits(), *tables, card, columns, inside):
            return None
        self.reader.last_t = int(out.t[-1])
        if self.t0 is None:
            self.t0 = int(out.t[0])
        self.bin_ms += 1000.0 * (time.perf_counter() - start)  # validation timed with mapping
        whole = sensor_region(*sensor, *card)[2:] == sensor
        return MappedEvents(out, None if whole else inside)

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
                before = self._bin(piece, begin, end, counts)
                count += piece[:before].count()
                if before < len(piece):
                    break
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

    def _bin(self, piece: MappedEvents, begin: int, end: int, counts: np.ndarray) -> int:
        """Add the counts of ``piece``'s events before ``end`` (all at or after ``begin``) to
        ``counts``; return how many there were."""
        e, g = piece.events, self.geometry
        if self.native is not None:
            return self.native.bin_mapped(
                e.t, e.x, e.y, e.p, begin, end, g.bin_us, *frame_tables(g), counts
            )
        before = count_before(e.t, end)
        if before:
            counts += bin_events(piece.events[:before], g, t0=begin, dtype=np.int64)
        return before

    def _drop_before(self, begin: int) -> None:
        """Drop the buffered events before ``begin``, then those outside the sensor region up to
        the first one inside it: the buffer starts with an event of the model's sensor."""
        while self.buffer:
            piece = self.buffer[0]
            k = count_before(piece.events.t, begin)
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
