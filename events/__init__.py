"""Event-camera data with numpy only: the event array, validation, file readers and writers,
binning into count frames, noise filtering, a DVS simulator and the wire codec.

Importing this package never imports torch.
"""

from spikeshot.events.array import (
    EVENT_DTYPE,
    EventColumns,
    EventError,
    Limits,
    as_events,
    empty,
    is_sorted,
    make_events,
    validate,
)
from spikeshot.events.binning import FrameGeometry, bin_batch, bin_events
from spikeshot.events.codec import decode, decode_columns, encode
from spikeshot.events.formats import detect_format, info, iter_chunks, read, write
from spikeshot.events.noise import background_activity_filter
from spikeshot.events.recording import FormatError, Recording

__all__ = [
    "EVENT_DTYPE",
    "EventColumns",
    "EventError",
    "FormatError",
    "FrameGeometry",
    "Limits",
    "Recording",
    "as_events",
    "background_activity_filter",
    "bin_batch",
    "bin_events",
    "decode",
    "decode_columns",
    "detect_format",
    "empty",
    "encode",
    "info",
    "is_sorted",
    "iter_chunks",
    "make_events",
    "read",
    "validate",
    "write",
]
