"""Binning events into ``[bins, 2, H, W]`` count frames: the input geometry a model card stores.

Conventions (``bin_events``):

- Time: the window ``[t0, t0 + window_us)`` is split into ``bins`` bins of ``bin_us = window_us //
  bins`` microseconds, half-open on the right: an event at ``t0 + k * bin_us`` counts in bin ``k``,
  one at ``t0 + window_us`` is dropped. This is tonic's ``ToFrame(time_window=bin_us,
  start_time=t0, end_time=t0 + window_us)`` convention; its ``n_time_bins`` mode differs (bins of
  ``(t_last - t_first) // bins`` from the first event, so the last events fall outside).
- Space: the crop ``(x0, y0, width, height)`` keeps ``x0 <= x < x0 + width`` (same for y); the
  downsample factor ``d`` sums each ``d x d`` block, so output pixel ``(x - x0) // d``. When the
  crop is not a multiple of ``d`` the ragged last columns/rows are dropped (output ``width // d``).
- Channels: 0 = OFF (p == 0), 1 = ON (p == 1); events with any other polarity are dropped
  (``validate`` rejects them earlier).

Events must be sorted by ``t`` (``validate`` returns them so): the window's bin edges are found by
binary search, so the timestamps are never swept. Each time bin is then one ``np.bincount`` over a
flat index built from small-integer columns; coordinates outside the crop and bad polarities land
in padding cells (one extra row and column per channel) that are sliced off.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields

import numpy as np

from spikeshot.events.array import EventColumns, check_events

INT64 = np.iinfo(np.int64)


@dataclass(frozen=True, kw_only=True)
class FrameGeometry:
    """Sensor crop, integer downsampling and time bins that turn events into frames."""

    sensor_width: int
    sensor_height: int
    crop: tuple[int, int, int, int] | None = None
    downsample: int = 1
    bins: int
    window_us: int

    def __post_init__(self):
        for name in ("sensor_width", "sensor_height", "downsample", "bins", "window_us"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        for name in ("sensor_width", "sensor_height"):
            if getattr(self, name) > 65535:
                raise _error(name, "must be <= 65535 (uint16 coordinates)")
        if self.crop is not None:
            if isinstance(self.crop, (str, bytes)) or len(self.crop) != 4:
                raise _error("crop", f"expected (x0, y0, width, height), got {self.crop!r}")
            x0, y0, w, h = (_int(f"crop[{i}]", v) for i, v in enumerate(self.crop))
            object.__setattr__(self, "crop", (x0, y0, w, h))
            if x0 < 0 or y0 < 0 or w < 1 or h < 1:
                raise _error("crop", f"need x0, y0 >= 0 and width, height >= 1, got {self.crop}")
            sw, sh = self.sensor_width, self.sensor_height
            if x0 + w > sw:
                raise _error("crop", f"x0 + width = {x0 + w} exceeds sensor_width {sw}")
            if y0 + h > sh:
                raise _error("crop", f"y0 + height = {y0 + h} exceeds sensor_height {sh}")
        _, _, w, h = self.crop_box
        if self.downsample > min(w, h):
            raise _error("downsample", f"{self.downsample} exceeds the crop size {w}x{h}")
        if self.window_us % self.bins:
            raise _error("window_us", f"{self.window_us} is not a multiple of bins={self.bins}")

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, width, height)`` of the crop; the full sensor when ``crop`` is None."""
        return self.crop if self.crop is not None else (0, 0, self.sensor_width, self.sensor_height)

    @property
    def width(self) -> int:
        """Output width: crop width // downsample."""
        return self.crop_box[2] // self.downsample

    @property
    def height(self) -> int:
        """Output height: crop height // downsample."""
        return self.crop_box[3] // self.downsample

    @property
    def bin_us(self) -> int:
        """Length of one time bin in microseconds."""
        return self.window_us // self.bins

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(bins, 2, height, width)``: the shape ``bin_events`` returns."""
        return (self.bins, 2, self.height, self.width)

    def to_dict(self) -> dict:
        """A JSON-ready dict (crop as a list or None), the inverse of ``from_dict``."""
        d = asdict(self)
        d["crop"] = None if self.crop is None else list(self.crop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FrameGeometry:
        """Build from ``to_dict``'s output; unknown or missing keys are errors."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in d]
        if unknown or missing:
            raise ValueError(f"FrameGeometry: unknown keys {unknown}, missing keys {missing}")
        crop = d.get("crop")
        return cls(**{**d, "crop": None if crop is None else tuple(crop)})


def _error(name: str, rule: str) -> ValueError:
    return ValueError(f"FrameGeometry.{name}: {rule}")


def _int(name: str, v) -> int:
    if isinstance(v, bool):
        raise _error(name, f"expected an integer, got {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise _error(name, f"expected an integer, got {v!r}") from None


def _positive_int(name: str, v) -> int:
    v = _int(name, v)
    if v < 1:
        raise _error(name, f"must be >= 1, got {v}")
    return v


def _searchsorted_left(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``np.searchsorted(a, v)`` for a sorted strided view, without the contiguous copy numpy makes:
    a vectorised bisection over ``v`` (log2(len(a)) steps of len(v) reads)."""
    lo = np.zeros(len(v), np.intp)
    hi = np.full(len(v), len(a), np.intp)
    last = len(a) - 1
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        less = a[np.minimum(mid, last)] < v
        lo = np.where(active & less, mid + 1, lo)
        hi = np.where(active & ~less, mid, hi)


def _bin_edges(t: np.ndarray, start: int, g: FrameGeometry) -> np.ndarray:
    """The index in the sorted ``t`` of each bin edge ``start + k * bin_us`` (k = 0..bins). The
    edges are Python integers: one past int64 lies after every event rather than wrapping around."""
    bounds = [start + g.bin_us * k for k in range(g.bins + 1)]
    clipped = np.array([min(max(b, INT64.min), INT64.max) for b in bounds], np.int64)
    edges = _searchsorted_left(t, clipped)
    edges[[b > INT64.max for b in bounds]] = len(t)
    return edges


def axis_index(coord: np.ndarray, start: int, factor: int, size: int) -> np.ndarray:
    """Output coordinate ``(coord - start) // factor`` as uint16, or ``size`` (the padding cell)
    outside ``[0, size)``: uint16 wrap-around sends ``coord < start`` far past ``size``."""
    out = np.subtract(coord, start, dtype=np.uint16)
    if factor > 1:
        out //= np.uint16(factor)
    return np.minimum(out, np.uint16(size), out=out)


def bin_events(
    events: np.ndarray | EventColumns,
    geometry: FrameGeometry,
    t0: int | None = None,
    dtype=np.float32,
) -> np.ndarray:
    """Count time-sorted ``events`` into frames of shape ``geometry.shape`` (see the module notes).

    ``t0`` (microseconds) starts the window; it defaults to the first event's ``t``. ``dtype`` is
    the output's: a float type, or an integer type that holds every count (else ValueError).
    """
    check_events(events)
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise ValueError(f"bin_events: dtype must be an integer or float type, got {dtype}")
    g = geometry
    if len(events) == 0:
        return np.zeros(g.shape, dtype)
    t = events["t"]
    edges = _bin_edges(t, int(t[0]) if t0 is None else operator.index(t0), g)
    i0 = int(edges[0])
    window = events[i0 : int(edges[-1])]

    x0, y0, _, _ = g.crop_box
    w1, h1 = g.width + 1, g.height + 1
    cols = axis_index(window["x"], x0, g.downsample, g.width)
    rows = axis_index(window["y"], y0, g.downsample, g.height)
    # Row of a (channel, y) pair in the padded frame, up to 3 * h1 - 1 before the last clip, which
    # sends polarities other than 0/1 to channel 1's padding row.
    if 3 * h1 > 65536:
        rows = rows.astype(np.uint32)
    rows += np.multiply(np.minimum(window["p"], np.uint8(2)), h1, dtype=rows.dtype)
    np.minimum(rows, rows.dtype.type(2 * h1 - 1), out=rows)
    index = np.multiply(rows, w1, dtype=np.intp)
    del rows
    index += cols
    del cols
    # One bincount per time bin: each counts into a table of one frame, which stays in cache.
    plane = 2 * h1 * w1
    counts = np.empty((g.bins, plane), np.int64)
    for k in range(g.bins):
        counts[k] = np.bincount(index[edges[k] - i0 : edges[k + 1] - i0], minlength=plane)
    counts = counts.reshape(g.bins, 2, h1, w1)[:, :, : g.height, : g.width]
    if dtype.kind in "iu" and counts.size and counts.max() > np.iinfo(dtype).max:
        raise ValueError(f"bin_events: a count of {counts.max()} does not fit in {dtype}")
    return counts.astype(dtype)


def bin_batch(
    recordings: Sequence[np.ndarray],
    geometry: FrameGeometry,
    t0: Sequence[int] | None = None,
    dtype=np.float32,
) -> np.ndarray:
    """``bin_events`` over many recordings: an array ``[N, bins, 2, H, W]``.

    ``t0`` gives each recording's window start (default: each one's first event).
    """
    if t0 is not None and len(t0) != len(recordings):
        raise ValueError(f"bin_batch: {len(t0)} start times for {len(recordings)} recordings")
    out = np.empty((len(recordings), *geometry.shape), np.dtype(dtype))
    for i, events in enumerate(recordings):
        out[i] = bin_events(events, geometry, None if t0 is None else t0[i], dtype)
    return out
