"""Adapted weights made ready for forward passes, kept for the sessions classified last.

Every forward pass of a session's weights first dequantizes them and prepares its network's
layers (``Network.prepare``: channels-last layouts, the exact int8 convolutions of spikes), which
for an 8-bit session costs about as much again as the forward itself. ``Prepared`` keeps that for
the ``size`` sessions classified last, one entry per session (its latest weights version), so a
session's repeated Classify calls and stream windows pay it once per Adapt.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class Prepared:
    """What ``make()`` returns for a (session id, weights version), for the ``size`` sessions
    used last; a session's newer version replaces its older one."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, tuple[int, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str, version: int, make: Callable[[], object]):
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None and entry[0] == version:
                self._entries.move_to_end(session_id)
                return entry[1]
        value = make()  # outside the lock: two callers may both make it, and one entry stays
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None or entry[0] <= version:
                self._entries[session_id] = (version, value)
                self._entries.move_to_end(session_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def drop(self, session_id: str) -> None:
        """Forget a session (deleted)."""
        with self._lock:
            self._entries.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._entries)
