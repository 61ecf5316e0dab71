"""The event array: one structured dtype for every stage, conversion from other libraries' dtypes,
and vectorised validation.

An event array is a 1-D numpy array of ``EVENT_DTYPE``:

=====  ========  ==================================================
field  dtype     meaning
=====  ========  ==================================================
t      int64     timestamp in microseconds (any origin)
x      uint16    column, 0 <= x < sensor width
y      uint16    row, 0 <= y < sensor height
p      uint8     polarity, 1 = ON (brighter), 0 = OFF
=====  ========  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])

# Field names other libraries use for the same quantities.
_ALIASES = {
    "t": ("t", "ts", "timestamp", "time"),
    "x": ("x",),
    "y": ("y",),
    "p": ("p", "on", "polarity", "pol"),
}


class EventError(ValueError):
    """Events that break a rule; the message names the field, the rule and the first bad index."""

    def __init__(self, field: str, rule: str, index: int | None = None):
        self.field, self.rule, self.index = field, rule, index
        where = "" if index is None else f" (first bad index {index})"
        super().__init__(f"events.{field}: {rule}{where}")


def empty(n: int = 0) -> np.ndarray:
    """A zero-filled event array of length ``n``."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(t, x, y, p) -> np.ndarray:
    """Build an event array from four columns (any integer or bool array-likes of one length)."""
    cols = [np.asarray(c) for c in (t, x, y, p)]
    n = len(cols[0])
    for name, c in zip("txyp", cols, strict=False):
        if c.ndim != 1 or len(c) != n:
            raise EventError(name, f"column must be 1-D of length {n}, got shape {c.shape}")
    ev = empty(n)
    for name, c in zip("txyp", cols, strict=False):
        ev[name] = c
    return ev


def as_events(arr) -> np.ndarray:
    """Convert a structured array from another library (aedat's ``on``, tonic's ``x,y,t,p``,
    ``ts``/``pol`` from .mat files, ...) to ``EVENT_DTYPE``; an array already in it is returned
    as is."""
    arr = np.asarray(arr)
    if arr.dtype == EVENT_DTYPE:
        return arr
    if arr.dtype.names is None:
        raise EventError(
            "dtype", f"expected a structured array with t, x, y, p fields, got {arr.dtype}"
        )
    cols = {}
    for field, aliases in _ALIASES.items():
        name = next((a for a in aliases if a in arr.dtype.names), None)
        if name is None:
            raise EventError(field, f"no field named any of {aliases} in dtype {arr.dtype}")
        cols[field] = arr[name]
    return make_events(cols["t"], cols["x"], cols["y"], cols["p"])


@dataclass(frozen=True)
class EventColumns:
    """Events as four separate columns (e.g. zero-copy views of wire bytes). Every function that
    reads events by field (``validate``, ``bin_events``) takes these as well as an event array,
    so a decoded message is validated and binned without being copied into one."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return EventColumns(self.t[key], self.x[key], self.y[key], self.p[key])

    def __len__(self) -> int:
        return len(self.t)

    def to_array(self) -> np.ndarray:
        """A copy as an ``EVENT_DTYPE`` array."""
        return make_events(self.t, self.x, self.y, self.p)


def check_events(events) -> None:
    """Raise ``EventError`` unless ``events`` is a 1-D ``EVENT_DTYPE`` array or ``EventColumns``."""
    if isinstance(events, EventColumns):
        return
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE:
        got = getattr(events, "dtype", type(events))
        raise EventError("dtype", f"expected an array of EVENT_DTYPE, got {got}")
    if events.ndim != 1:
        raise EventError("shape", f"expected a 1-D array, got shape {events.shape}")


@dataclass(frozen=True)
class Limits:
    """What ``validate`` accepts. ``width``/``height`` of None skip the coordinate checks."""

    width: int | None = None
    height: int | None = None
    max_events: int | None = None
    allow_empty: bool = False


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _check_below(events, field: str, bound: int, rule: str) -> None:
    col = events[field]
    if len(col) and col.max() >= bound:
        raise EventError(field, rule, _first(col >= bound))


def validate(events, limits: Limits = Limits(), *, sort: bool = False):
    """Check ``events`` (an event array or ``EventColumns``) against ``limits`` and return them
    (sorted by time when ``sort``).

    Raises ``EventError`` naming the field, the rule and the first bad index. Never modifies the
    input: sorting returns a new object.
    """
    check_events(events)
    n = len(events)
    if n == 0 and not limits.allow_empty:
        raise EventError("events", "at least one event is required")
    if limits.max_events is not None and n > limits.max_events:
        raise EventError(
            "events", f"{n} events exceed the limit of {limits.max_events}", limits.max_events
        )
    if limits.width is not None:
        _check_below(events, "x", limits.width, f"must be < sensor width {limits.width}")
    if limits.height is not None:
        _check_below(events, "y", limits.height, f"must be < sensor height {limits.height}")
    _check_below(events, "p", 2, "polarity must be 0 or 1")
    t = events["t"]
    if n > 1:
        dec = t[1:] < t[:-1]
        if dec.any():
            if not sort:
                raise EventError(
                    "t", "timestamps must not decrease (pass sort=True to sort)", _first(dec) + 1
                )
            events = events[np.argsort(t, kind="stable")]
    return events


def is_sorted(events) -> bool:
    """True when timestamps never decrease."""
    t = events["t"]
    return bool(len(t) < 2 or not (t[1:] < t[:-1]).any())
