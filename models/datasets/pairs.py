"""Two digit recordings side by side, as Double NMNIST builds its samples (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spikeshot.events.array import EVENT_DTYPE, EventError
from spikeshot.models.datasets.base import distinct


def crop_events(events: np.ndarray, crop: int, offset: int) -> np.ndarray:
    """Events inside the ``crop`` x ``crop`` square whose top-left pixel is (``offset``,
    ``offset``), moved so that square starts at (0, 0)."""
    x = events["x"].astype(np.int64) - offset
    y = events["y"].astype(np.int64) - offset
    inside = (x >= 0) & (x < crop) & (y >= 0) & (y < crop)
    out = events[inside]
    out["x"] = x[inside]
    out["y"] = y[inside]
    return out


def pair_side_by_side(
    left_events: np.ndarray, right_events: np.ndarray, crop: int = 32, *, offset: int = 1
) -> np.ndarray:
    """One sample of a "double" dataset: each recording cropped to ``crop`` x ``crop`` (from
    pixel ``offset``; 1 centres 32 on N-MNIST's 34x34 sensor), the right one shifted right by
    ``crop``, merged by time. The result lives on a (2 * crop) x crop sensor, sorted by time
    (stable: at equal times the left digit's events come first).
    """
    if crop <= 0 or offset < 0 or 2 * crop > 65536:
        raise ValueError(
            f"crop must be in 1..32768 and offset >= 0, got crop={crop}, offset={offset}"
        )
    for name, ev in (("left_events", left_events), ("right_events", right_events)):
        if not isinstance(ev, np.ndarray) or ev.dtype != EVENT_DTYPE or ev.ndim != 1:
            raise EventError("dtype", f"{name} must be a 1-D array of EVENT_DTYPE")
    left = crop_events(left_events, crop, offset)
    right = crop_events(right_events, crop, offset)
    right["x"] += crop
    both = np.concatenate([left, right])
    return both[np.argsort(both["t"], kind="stable")]


def draw_pairs(
    left_pool: Sequence,
    right_pool: Sequence,
    same: bool,
    count: int,
    rng: np.random.Generator,
    name: str,
) -> list[tuple]:
    """``count`` (left, right) pairs for class ``name`` from the two pools with no element used
    twice, also across the two sides when ``same`` (both halves of the class are one digit or
    letter, one pool)."""
    if same:
        picks = distinct(len(left_pool), 2 * count, rng, f"class {name!r}")
        return [
            (left_pool[a], left_pool[b]) for a, b in zip(picks[:count], picks[count:], strict=True)
        ]
    lefts = distinct(len(left_pool), count, rng, f"class {name!r} (its left half)")
    rights = distinct(len(right_pool), count, rng, f"class {name!r} (its right half)")
    return [(left_pool[a], right_pool[b]) for a, b in zip(lefts, rights, strict=True)]
