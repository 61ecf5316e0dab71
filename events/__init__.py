"""Event-camera data with numpy only: the event array, validation, file readers and writers,
binning into count frames, noise filtering, a DVS simulator and the wire codec.

Importing this package never imports torch.
"""

from spikeshot.events.array import (
    EVENT_DTYPE,
    EventError,
    Limits,
    as_events,
    empty,
    is_sorted,
    make_events,
    validate,
)

__all__ = [
    "EVENT_DTYPE",
    "EventError",
    "Limits",
    "as_events",
    "empty",
    "is_sorted",
    "make_events",
    "validate",
]
