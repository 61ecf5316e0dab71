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
        name = "events" if field == "events" else f"events.{field}"  # the whole, or a column
        super().__init__(f"{name}: {rule}{where}")


def empty(n: int = 0) -> np.ndarray:
    """A zero-filled event array of length ``n``."""
    return np.zeros(n, dtype=EVENT_DTYPE)


# What each column may hold before it is stored: (lowest, highest).
_RANGES = {"t": (-(2**63), 2**63 - 1), "x": (0, 2**16 - 1), "y": (0, 2**16 - 1)}


def make_events(t, x, y, p) -> np.ndarray:
    """Build an event array from four columns of one length: integers (or whole-valued floats)
    that fit the column's type, and polarities as {0, 1}, {-1, 1} (-1 is OFF) or bool. A value
    out of range is an ``EventError`` naming the column and the first bad event (the earliest
    over all columns, so that the error does not depend on where the events were cut), never
    wrapped."""
    cols = [np.asarray(c) for c in (t, x, y, p)]
    n = len(cols[0]) if cols[0].ndim == 1 else -1
    for name, c in zip("txyp", cols, strict=True):
        if c.ndim != 1 or len(c) != n:
            raise EventError(name, f"column must be 1-D of length {n}, got shape {c.shape}")
        if c.dtype.kind not in "iubf":
            raise EventError(name, f"column must hold integers, got dtype {c.dtype}")
    problems = [e for e in map(_column_problem, "txyp", cols) if e is not None]
    if problems:
        raise min(problems, key=lambda e: e.index)  # ties: the first column
    ev = empty(n)
    for name, c in zip("txy", cols, strict=False):
        ev[name] = c
    ev["p"] = cols[3] == 1
    return ev


def _column_problem(name: str, c: np.ndarray) -> EventError | None:
    """The first value of column ``name`` that ``make_events`` cannot store, or None."""
    rules = []  # (bad values, rule), in the order they are judged at one index
    if c.dtype.kind == "f":
        finite = np.isfinite(c)
        rules.append((~finite, "column must hold finite numbers"))
        rules.append((finite & (c != np.round(c)), "column must hold whole numbers"))
    if name in _RANGES:
        lo, hi = _RANGES[name]
        bad = (c < lo) | (c > hi) if c.dtype.kind == "f" else _outside(c, lo, hi)
        rules.append((bad, f"must be in {lo}..{hi}"))
    elif c.dtype.kind != "b":
        rules.append(
            ((c != 0) & (c != 1) & (c != -1), "polarity must be 0/1, -1/1 (-1 = OFF) or bool")
        )
    found = [(_first(bad), rule) for bad, rule in rules if bad.any()]
    if not found:
        return None
    index, rule = min(found, key=lambda f: f[0])  # ties: the rule judged first
    return EventError(name, rule, index)


def _outside(c: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Mask of integer values outside [lo, hi], without overflowing the column's own type."""
    info = np.iinfo(c.dtype)
    mask = np.zeros(len(c), bool)
    if info.min < lo:
        mask |= c < np.array(lo).astype(c.dtype)
    if info.max > hi:
        mask |= c > np.array(hi).astype(c.dtype)
    return mask


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
        """A copy as an ``EVENT_DTYPE`` array, value for value (``validate`` judges them)."""
        ev = empty(len(self.t))
        ev["t"], ev["x"], ev["y"], ev["p"] = self.t, self.x, self.y, self.p
        return ev


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

    Raises ``EventError`` naming the field, the rule and the first bad index (timestamps that
    decrease are one unless ``sort``). Never modifies the input: sorting returns a new object.
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
                raise EventError("t", "timestamps must not decrease", _first(dec) + 1)
            events = events[np.argsort(t, kind="stable")]
    return events


def is_sorted(events) -> bool:
    """True when timestamps never decrease."""
    t = events["t"]
    return bool(len(t) < 2 or not (t[1:] < t[:-1]).any())
