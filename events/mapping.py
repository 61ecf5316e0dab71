"""Events of any sensor in the coordinates of a model card's sensor, and the grouping of mapped
chunks into pieces large enough to bin efficiently (numpy only).

The rule: take the largest centred region of the sending sensor with the card sensor's aspect ratio
(``sensor_region``; the excess columns or rows are split evenly on both sides, an odd one going to
the right or bottom) and scale coordinates from that region to the card's sensor:
``x' = (x - x0) * card_width // region_width``, likewise for y. Events outside the region are kept
but marked (``MappedEvents.inside``) and placed off the card's sensor, so binning drops them; a
larger sensor is thereby downsampled (counts of merged pixels add up), a smaller one upsampled
(each pixel lands on one card pixel, leaving gaps).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from spikeshot.events.array import EventColumns
from spikeshot.events.binning import axis_index

# Chunks of fewer events are concatenated up to this many before binning, so that each
# ``bin_events`` call's fixed cost is spread over enough events.
PIECE_EVENTS = 1 << 16


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


def count_before(t: np.ndarray, end: int) -> int:
    """How many of the (non-empty, sorted) timestamps ``t`` are before ``end``."""
    return 0 if t[0] >= end else len(t) if t[-1] < end else int(np.searchsorted(t, end))


class Pieces:
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


@functools.lru_cache(maxsize=64)
def coordinate_tables(
    width: int, height: int, card_width: int, card_height: int
) -> tuple[np.ndarray, np.ndarray]:
    """``map_to_sensor``'s rule on every x and every y of a ``width`` x ``height`` sensor: the
    card's coordinate, or ``card_width`` / ``card_height`` outside the sensor region (uint16)."""
    x0, y0, w, h = sensor_region(width, height, card_width, card_height)
    return (
        _scale(np.arange(width, dtype=np.uint16), x0, w, card_width),
        _scale(np.arange(height, dtype=np.uint16), y0, h, card_height),
    )


@functools.lru_cache(maxsize=64)
def frame_tables(geometry) -> tuple[np.ndarray, np.ndarray]:
    """For each x of the ``FrameGeometry``'s card sensor (and the card width, where
    ``map_to_sensor`` puts events outside the sensor region) the frame column of its events, and
    likewise for each y the row, under the crop and downsample: -1 off the crop (int32)."""
    g = geometry
    crop_x, crop_y, _, _ = g.crop_box

    def table(card: int, crop: int, out: int) -> np.ndarray:
        pixel = axis_index(np.arange(card + 1, dtype=np.uint16), crop, g.downsample, out)
        pixel = pixel.astype(np.int32)
        pixel[pixel == out] = -1
        return pixel

    return table(g.sensor_width, crop_x, g.width), table(g.sensor_height, crop_y, g.height)


@functools.lru_cache(maxsize=64)
def pixel_tables(width: int, height: int, geometry) -> tuple[np.ndarray, np.ndarray]:
    """For each x of a ``width`` x ``height`` sensor the frame column its events count in, and
    for each y the row, under ``map_to_sensor``'s rule and then the ``FrameGeometry``'s crop and
    downsample: -2 outside the sensor region, -1 inside it but off the crop (int32)."""
    g = geometry
    crop_x, crop_y, _, _ = g.crop_box
    xs, ys = coordinate_tables(width, height, g.sensor_width, g.sensor_height)

    def table(mapped: np.ndarray, card: int, crop: int, out: int) -> np.ndarray:
        # binning's ``axis_index`` sends coordinates off the crop to ``out``
        pixel = axis_index(mapped, crop, g.downsample, out).astype(np.int32)
        pixel[pixel == out] = -1
        pixel[mapped == card] = -2
        return pixel

    return (
        table(xs, g.sensor_width, crop_x, g.width),
        table(ys, g.sensor_height, crop_y, g.height),
    )
