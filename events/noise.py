"""Background-activity noise filter: drop events that no neighbouring pixel supports in time.

An event ``i`` at pixel ``(x, y)`` and time ``t`` survives when some event ``j`` fired at another
pixel of its ``(2r+1) x (2r+1)`` neighbourhood (the event's own pixel excluded, so a hot pixel
cannot support itself) with ``t - time_window_us < t_j <= t``. Supporting events at the same
timestamp count in both directions: their order inside one timestamp is arbitrary in a recording.
Later events never support earlier ones.

This differs from tonic's ``Denoise``, which looks at the 4 nearest pixels only and processes the
stream in order (of two simultaneous neighbours only the later one survives).

Vectorised: events are sorted by (pixel, time order) into one int64 key, and each neighbour offset
is answered for all undecided events at once by one ``np.searchsorted`` that finds the neighbour's
first event inside the time window.
"""

from __future__ import annotations

import numpy as np

from spikeshot.events.array import Limits, validate


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"background_activity_filter: {name} must be an integer >= 1, got {v!r}")
    return int(v)


def background_activity_filter(
    events: np.ndarray, width: int, height: int, time_window_us: int, radius: int = 1
) -> np.ndarray:
    """The events that a neighbour supports (see the module notes), in time order.

    ``events`` are validated against a ``width x height`` sensor (unsorted input is sorted).
    """
    width, height, window, radius = (
        _positive_int(name, v)
        for name, v in (
            ("width", width),
            ("height", height),
            ("time_window_us", time_window_us),
            ("radius", radius),
        )
    )
    events = validate(events, Limits(width, height, allow_empty=True), sort=True)
    n = len(events)
    if n == 0:
        return events.copy()
    if width * height * n >= 2**63:
        raise ValueError(
            f"background_activity_filter: {n} events on {width}x{height} overflow "
            "the int64 sort key; filter fewer events at a time"
        )
    t = events["t"]
    # Each event's window as positions in the time-sorted array: [first, last) with
    # t[first] > t - window and t[last - 1] <= t.
    first = np.searchsorted(t, t - window, side="right")
    last = np.searchsorted(t, t, side="right")
    pixel = events["y"].astype(np.int64) * width + events["x"]
    key = np.sort(pixel * n + np.arange(n))
    pixel = key // n  # from here on, everything is in key order
    pos = key - pixel * n
    x, y = pixel % width, pixel // width
    first, last = first[pos], last[pos]

    bounded = np.append(key, np.iinfo(np.int64).max)  # key[n] never counts as a hit
    keep = np.zeros(n, bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                continue
            # Queries stay sorted (key order), which keeps searchsorted cache-friendly.
            todo = np.flatnonzero(
                ~keep & (x + dx >= 0) & (x + dx < width) & (y + dy >= 0) & (y + dy < height)
            )
            base = (pixel[todo] + (dy * width + dx)) * n
            # The neighbour's first event at or after position `first`: a hit if before `last`.
            after_first = np.searchsorted(key, base + first[todo])
            keep[todo[bounded[after_first] < base + last[todo]]] = True
    return events[np.sort(pos[keep])]
