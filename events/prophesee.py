"""What Prophesee's EVT 2.0, EVT 3.0 and DAT formats share: the ``%`` text header, the sensor sizes
of Prophesee cameras, and the vectorised helpers their decoders use (counter unwrapping, the
state set by the last state word).

A header is a run of lines that start with ``"% "`` (a bare ``"%"`` line is accepted too); newer
files end it with ``"% end"``. Each line is a key and a value: ``% evt 3.0``,
``% format EVT3;height=720;width=1280``, ``% geometry 640x480``, ``% Width 304``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from spikeshot.events.recording import MAX_SENSOR_SIZE, FormatError

# Camera names found in the plugin_name line, most specific first.
_CAMERAS = (
    ("genx320", (320, 320)),
    ("imx636", (1280, 720)),
    ("imx646", (1280, 720)),
    ("gen4", (1280, 720)),
    ("gen3", (640, 480)),
)
_GENERATIONS = {"4": (1280, 720), "3": (640, 480)}


@dataclass(frozen=True)
class Header:
    """The value of the first line of each key (lowercased), and the header's length in bytes."""

    values: dict[str, str]
    size: int

    def get(self, key: str) -> str | None:
        """The value of the first line whose key is ``key`` (case-insensitive), else None."""
        return self.values.get(key.lower())

    def format_fields(self) -> dict[str, str]:
        """``% format EVT3;height=720;width=1280`` as {"": "EVT3", "height": "720", ...}."""
        value = self.get("format")
        if value is None:
            return {}
        fields = {}
        for i, part in enumerate(value.split(";")):
            name, sep, val = part.partition("=")
            if sep:
                fields[name.strip().lower()] = val.strip()
            elif i == 0:
                fields[""] = part.strip()
        return fields

    def evt_version(self) -> str | None:
        """ "2.0", "2.1" or "3.0" from ``% evt`` or ``% format``, else None."""
        evt = self.get("evt")
        if evt is not None:
            evt = evt.strip()
            return f"{evt}.0" if evt.isdigit() else evt
        name = self.format_fields().get("", "").upper()
        match = re.fullmatch(r"EVT(\d)(\d?)", name)
        return f"{match[1]}.{match[2] or '0'}" if match else None

    def stated_size(self) -> tuple[int, int] | None:
        """The sensor size the header states: ``geometry WxH``, ``format ...;width=;height=`` or
        ``Width``/``Height`` lines."""
        geometry = self.get("geometry")
        if geometry is not None:
            match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", geometry)
            if match:
                return int(match[1]), int(match[2])
        fields = self.format_fields()
        if "width" in fields and "height" in fields:
            return _size(fields["width"], fields["height"])
        width, height = self.get("width"), self.get("height")
        if width is not None and height is not None:
            return _size(width, height)
        return None

    def camera_size(self) -> tuple[int, int] | None:
        """The usual sensor of the camera the header names, else None."""
        names = (self.get("plugin_name") or "").lower()
        for name, size in _CAMERAS:
            if name in names:
                return size
        generation = (self.get("sensor_generation") or "").strip()
        return _GENERATIONS.get(generation[:1])


def _size(width: str, height: str) -> tuple[int, int]:
    if not (width.strip().isdigit() and height.strip().isdigit()):
        raise ValueError(f"sensor size {width!r} x {height!r} in the header is not two integers")
    return int(width), int(height)


def open_header(
    path, stream: BinaryIO | None = None, header: Header | None = None
) -> tuple[BinaryIO, Header]:
    """``path`` open at its first data byte, and its header: ``stream`` as format detection
    left it (at its first byte, or past ``header`` when it read that), else opened here."""
    stream = stream or open(path, "rb")  # the caller's block generator closes it
    if header is None:
        try:
            header = read_header(stream)
        except BaseException:
            stream.close()
            raise
    return stream, header


def open_evt(
    path, version: str, stream: BinaryIO | None = None, header: Header | None = None
) -> tuple[BinaryIO, Header, tuple[int, int] | None]:
    """``open_header``, then check that the header names EVT ``version`` (or none). Return the
    stream at the first data byte, the header and the sensor size it states."""
    stream, header = open_header(path, stream, header)
    try:
        named = header.evt_version()
        if named not in (None, version):
            raise FormatError(path, 0, f"the header says EVT {named}, not EVT {version}")
        return stream, header, sized(header, path)
    except BaseException:
        stream.close()
        raise


def sized(header: Header, path) -> tuple[int, int] | None:
    """``header.stated_size()``, with a malformed size, or one outside 1..65535 (what uint16
    coordinates address), reported as a ``FormatError``."""
    try:
        size = header.stated_size()
    except ValueError as error:
        raise FormatError(path, 0, str(error)) from None
    if size is not None and not all(1 <= v <= MAX_SENSOR_SIZE for v in size):
        shown = [str(v) if v < 10**9 else f"a number of {len(str(v))} digits" for v in size]
        raise FormatError(
            path, 0, f"sensor size {shown[0]} x {shown[1]} in the header is outside 1..65535"
        )
    return size


def read_header(stream: BinaryIO) -> Header:
    """Read the ``%`` lines at the start of ``stream`` (a buffered binary reader with ``peek``,
    which may be a pipe) and leave it at the first byte of data."""
    values: dict[str, str] = {}
    size = 0
    # A pipe may show one byte only; a lone "%" is then taken as the start of a header line.
    while stream.peek(2)[:2] in (b"% ", b"%\n", b"%\r", b"%"):
        raw = stream.readline()
        size += len(raw)
        text = raw[1:].decode("latin-1").strip()
        key, _, value = text.partition(" ")
        if key:
            values.setdefault(key.lower(), value.strip())
        if text == "end":
            break
    return Header(values, size)


def unwrap(raw: np.ndarray, previous: int, bits: int) -> np.ndarray:
    """Unwrap the readings ``raw`` (int64) of a ``bits``-bit counter that wraps around, given the
    unwrapped value before them (-1 for none). A drop of at least half the counter's range is a
    wrap (Prophesee's rule); a smaller drop is kept as a step back in time."""
    if not len(raw):
        return raw
    period = 1 << bits
    before = previous % period if previous >= 0 else raw[0]
    start = previous - before if previous >= 0 else 0
    wraps = np.cumsum(np.diff(raw, prepend=before) <= -(period // 2))
    return start + wraps * period + raw


def carried(positions: np.ndarray, values: np.ndarray, at: np.ndarray, initial: int) -> np.ndarray:
    """The state a stateful word stream has at each index of ``at``: the value of the last of the
    state-setting words at ``positions`` (sorted indices, with ``values``) at or before it, or
    ``initial`` (the state carried in from before the block) before the first."""
    if not len(positions):
        return np.full(len(at), initial, dtype=np.int64)
    i = np.searchsorted(positions, at, side="right") - 1
    return np.where(i >= 0, values[np.maximum(i, 0)], initial)
