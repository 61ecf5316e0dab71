"""Numba kernels for the per-event loops: the readers' EVT 3.0, EVT 2.0, DAT and N-MNIST decoding,
the conversion of AEDAT4 event records and the largest coordinates of an event array; and the
server's pass over a request chunk (``ingest``: validate, map, bin; ``map_chunk``: validate, map)
and over a stream window's mapped events (``bin_mapped``).

Each kernel does, one word at a time, what the numpy code of its reader does for a whole block;
that code is the reference (the tests check the two equal) and the path taken where numba is not
installed. This module imports numba, so the readers reach it only through
``recording.kernels()``, when a kernel is first needed.

A decoding kernel takes its decoder's state and an output array with room for the block's events,
and returns the number of events written, whether the block decoded cleanly, and the new state.
On anything wrong (an unknown word type, an event outside the sensor, a bad field) it returns
False and the old state: the reader then decodes the block with the reference, which raises the
error with its message and byte offset. ``cache=True`` writes the machine code to
``__pycache__`` beside this file for later processes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_jit = njit(nogil=True, cache=True)


@_jit
def _put(out, n, t, x, y, p):
    out[n].t = t
    out[n].x = x
    out[n].y = y
    out[n].p = p


@_jit
def _unwrap(previous, raw, bits):
    """The reading ``raw`` of a ``bits``-bit counter, unwrapped after the unwrapped reading
    ``previous`` (-1: none) by the rule of ``prophesee.unwrap``."""
    if previous < 0:
        return raw
    period = np.int64(1) << bits
    before = previous & (period - 1)
    base = previous - before
    if raw - before <= -(period >> 1):
        base += period
    return base + raw


def _evt3_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For EVT 3.0: the events each 16-bit word holds (1 for ADDR_X, the set bits of a vector's
    mask, else 0), the lowest set bit of each 12-bit mask, and which of the 16 types are known."""
    word = np.arange(1 << 16)
    kind = word >> 12
    mask = np.select([kind == 0x2, kind == 0x4, kind == 0x5], [1, word & 0xFFF, word & 0xFF], 0)
    events = np.unpackbits(mask.astype(">u2").view(np.uint8)).reshape(-1, 16).sum(axis=1)
    lowest = np.array([(m & -m).bit_length() - 1 for m in range(1 << 12)]).clip(0)
    known = np.isin(np.arange(16), [0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF])
    return events.astype(np.uint8), lowest.astype(np.uint8), known


_EVT3_EVENTS, _LOWEST_BIT, _EVT3_KNOWN = _evt3_tables()


@_jit
def evt3_bound(words):
    """The most events the EVT 3.0 ``words`` can hold."""
    n = 0
    for word in words:
        n += _EVT3_EVENTS[word]
    return n


@_jit
def evt3(words, state, width, height, out):
    """Decode EVT 3.0 ``words`` (state: unwrapped TIME_HIGH or -1, TIME_LOW, y, x of the next
    vector event, its polarity); ``out`` has room for ``evt3_bound(words) + 1`` events.

    Vector and TIME_HIGH words branch. Every other word is written as an ADDR_X event, kept only
    when it is one, and sets y, TIME_LOW or the vector base through masks: a stream whose word
    types follow no pattern then costs no mispredicted branches."""
    time_high, time_low, y, x_next, polarity = state
    n = 0
    outside = False
    for i in range(len(words)):
        word = np.int64(words[i])
        kind = word >> 12
        low = word & 0x7FF
        if kind | 1 == 0x5:  # VECT_12 (0x4) or VECT_8 (0x5): events at the set bits
            vect_8 = kind & 1
            mask = word & (0xFFF >> (vect_8 << 2))
            if time_high >= 0 and y >= 0 and x_next >= 0:
                t = (time_high << 12) | time_low
                while mask:
                    x = (x_next + _LOWEST_BIT[mask]) & 0xFFFF  # as stored in uint16
                    mask &= mask - 1
                    outside |= (x >= width) | (y >= height)
                    _put(out, n, t, x, y, polarity)
                    n += 1
            x_next += 12 - (vect_8 << 2)
        elif kind == 0x8:  # TIME_HIGH; a change zeroes TIME_LOW
            high = _unwrap(time_high, word & 0xFFF, 12)
            if high != time_high:
                time_low = 0
            time_high = high
        elif not _EVT3_KNOWN[kind]:
            return n, False, state
        else:  # ADDR_X, ADDR_Y, TIME_LOW, VECT_BASE_X, or a skipped type
            _put(out, n, (time_high << 12) | time_low, low, y, (word >> 11) & 1)
            kept = np.int64(kind == 0x2) & np.int64(time_high >= 0) & np.int64(y >= 0)
            outside |= (kept == 1) & ((low >= width) | (y >= height))
            n += kept
            is_y = -np.int64(kind == 0x0)  # all bits set for ADDR_Y, else none
            y = (y & ~is_y) | (low & is_y)
            is_low = -np.int64(kind == 0x6)
            time_low = (time_low & ~is_low) | (word & 0xFFF & is_low)
            is_base = -np.int64(kind == 0x3)
            x_next = (x_next & ~is_base) | (low & is_base)
            polarity = (polarity & ~is_base) | ((word >> 11) & 1 & is_base)
    if outside:
        return n, False, state
    return n, True, (time_high, time_low, y, x_next, polarity)


@_jit
def evt2(words, time_high, width, height, out):
    """Decode EVT 2.0 ``words`` (state: the unwrapped TIME_HIGH, -1 before the first)."""
    start = time_high
    n = 0
    for i in range(len(words)):
        word = np.int64(words[i])
        kind = word >> 28
        if kind <= 0x1:  # CD_OFF, CD_ON
            if time_high >= 0:
                x, y = (word >> 11) & 0x7FF, word & 0x7FF
                if x >= width or y >= height:
                    return n, False, start
                _put(out, n, (time_high << 6) | ((word >> 22) & 0x3F), x, y, kind)
                n += 1
        elif kind == 0x8:  # TIME_HIGH
            time_high = _unwrap(time_high, word & 0x0FFFFFFF, 28)
        elif kind != 0xA and kind != 0xE and kind != 0xF:
            return n, False, start
    return n, True, time_high


@_jit
def dat(records, t, width, height, out):
    """Decode DAT ``records`` (pairs of 32-bit time and data; state: the last unwrapped time, -1
    before the first). Times unwrap as in ``_unwrap``, with the wrap base and the last reading
    kept apart so that no record waits on the previous one's unwrapped time."""
    start = t
    last = t & 0xFFFFFFFF if t >= 0 else (np.int64(records[0, 0]) if len(records) else 0)
    base = t - last if t >= 0 else 0
    for i in range(len(records)):
        raw, word = np.int64(records[i, 0]), np.int64(records[i, 1])
        x, y, polarity = word & 0x3FFF, (word >> 14) & 0x3FFF, word >> 28
        if polarity > 1 or x >= width or y >= height:
            return i, False, start
        if raw - last <= -(1 << 31):
            base += 1 << 32
        last = raw
        _put(out, i, base + raw, x, y, polarity)
    return len(records), True, base + last if len(records) else start


@_jit
def nmnist(records, state, out):
    """Decode N-MNIST 5-byte ``records`` (state: wrap markers seen, the last time or -1)."""
    wraps, t = state
    n = 0
    for i in range(len(records)):
        x, y, high = np.int64(records[i, 0]), np.int64(records[i, 1]), np.int64(records[i, 2])
        if y == 240:  # the 23-bit time wrapped around
            wraps += 1
            continue
        low = np.int64(records[i, 3]) << 8 | np.int64(records[i, 4])
        now = ((high & 0x7F) << 16 | low) + (wraps << 23)
        if now < t:
            return n, False, state
        _put(out, n, now, x, y, high >> 7)
        t = now
        n += 1
    return n, True, (wraps, t)


@_jit
def _le(buf, at, n):
    """The ``n``-byte little-endian unsigned integer at ``buf[at]`` (-1 where it runs past the
    end)."""
    if at < 0 or at + n > len(buf):
        return np.int64(-1)
    value = np.int64(0)
    for k in range(n):
        value |= np.int64(buf[at + k]) << (8 * k)
    return value


@_jit
def aedat(buf, width, height, out, start):
    """Decode the decompressed AEDAT4 event packet ``buf`` (bytes as uint8: a size-prefixed
    FlatBuffer ``EVTS`` of 16-byte records) into ``out[start:]``: (events written, True), or
    (0, False) at anything ``aedat4.records`` or ``aedat4.convert`` would refuse."""
    size = _le(buf, 0, 4)
    if len(buf) < 12 or size < 8 or size + 4 > len(buf) or buf[8] != 69 or buf[9] != 86:
        return 0, False
    if buf[10] != 84 or buf[11] != 83:  # "EVTS"
        return 0, False
    body = buf[4 : 4 + size]
    root = _le(body, 0, 4)
    back = _le(body, root, 4)
    if root < 0 or back < 0:
        return 0, False
    vtable = root - (back - (1 << 32) if back >= 1 << 31 else back)
    vtable_size, table_size = _le(body, vtable, 2), _le(body, vtable + 2, 2)
    if vtable_size < 4 or table_size < 0 or vtable_size % 2 or root + table_size > size:
        return 0, False
    if vtable + vtable_size > size:
        return 0, False
    field = _le(body, vtable + 4, 2) if vtable_size >= 6 else 0
    if field == 0:
        return 0, True
    if field + 4 > table_size:
        return 0, False
    vector = root + field + _le(body, root + field, 4)
    n = _le(body, vector, 4)
    first = vector + 4
    if n < 0 or first + 16 * n > size or start + n > len(out):
        return 0, False
    for i in range(n):
        at = first + 16 * i
        t, x, y, p = _le(body, at, 8), _le(body, at + 8, 2), _le(body, at + 10, 2), body[at + 12]
        if t < 0 or p > 1 or x >= width or y >= height:
            return 0, False
        _put(out, start + i, t, x, y, p)
    return n, True


@_jit
def extent(events):
    """The largest x and y of ``events`` (-1 without any)."""
    x_max = y_max = -1
    for i in range(len(events)):
        x_max = max(x_max, np.int64(events[i].x))
        y_max = max(y_max, np.int64(events[i].y))
    return x_max, y_max


@_jit
def _wire_event(packed, t_origin, t, x, y, p, i):
    """Event ``i`` of a request chunk's columns (see ``ingest``) as four int64."""
    if packed:
        w = np.int64(x[i])
        return t_origin + np.int64(t[i]), w & 0xFFFF, (w >> 16) & 0x7FFF, w >> 31
    return np.int64(t[i]), np.int64(x[i]), np.int64(y[i]), np.int64(p[i])


@_jit
def _breaks_a_rule(t, x, y, p, last, limits):
    """Whether an event breaks a request's rules: time order from ``last`` on, and ``limits``
    (sensor width, sensor height, largest timestamp)."""
    return t < last or t > limits[2] or x >= limits[0] or y >= limits[1] or p > 1


@_jit
def ingest(
    packed, t_origin, t, x, y, p, limits, previous_t, columns, rows, t0, end, bin_us, counts
):
    """One chunk of a server request in one pass: validate, map to the card's sensor, bin.

    ``t, x, y, p``: the wire's columns (int64, uint16, uint16, uint8), or where ``packed`` the
    packed encoding's (``spikeshot.events.codec``): ``t`` the uint32 ``dt`` from ``t_origin``
    and ``x`` the uint32 ``xyp`` (``y`` and ``p`` unread). ``limits``: (sensor width, sensor
    height, largest timestamp); the timestamps must not decrease, from ``previous_t`` (the last
    of the chunk before) on. ``columns[x]`` and ``rows[y]`` (``mapping.pixel_tables``) give each
    sensor coordinate's frame pixel: -2 outside the sensor region, -1 inside it but outside the
    crop. Events in ``[t0, end)`` count in bin ``(t - t0) // bin_us`` of ``counts`` [bins, 2,
    height, width].

    Returns (ok, events before ``end``, of those the events inside the region). Not ok: an event
    breaks a rule (``counts`` may hold some of the chunk's counts then; the caller drops them and
    raises the reference's error)."""
    last = previous_t
    before = inside = 0
    k, edge = 0, t0 + bin_us  # events are in time order: the bin only moves on
    for i in range(len(t)):
        ti, xi, yi, pi = _wire_event(packed, t_origin, t, x, y, p, i)
        if _breaks_a_rule(ti, xi, yi, pi, last, limits):
            return False, before, inside
        last = ti
        if ti >= end:
            continue
        before += 1
        col, row = columns[xi], rows[yi]
        if col == -2 or row == -2:
            continue
        inside += 1
        if col < 0 or row < 0:
            continue
        while ti >= edge:
            k += 1
            edge += bin_us
        counts[k, pi, row, col] += 1
    return True, before, inside


@_jit
def map_chunk(packed, t_origin, t, x, y, p, limits, previous_t, xs, ys, card, out, inside):
    """One chunk of a stream in one pass: validate as ``ingest`` does and map to the card's
    sensor: ``xs[x]`` and ``ys[y]`` (``mapping.coordinate_tables``) are the card's coordinates,
    its width or height (``card``) for those outside the sensor region. Writes the mapped events
    into the columns ``out`` (t, x, y, p) and whether each is inside the region into ``inside``;
    returns whether the chunk keeps every rule (else the caller raises the reference's error)."""
    last = previous_t
    out_t, out_x, out_y, out_p = out
    for i in range(len(t)):
        ti, xi, yi, pi = _wire_event(packed, t_origin, t, x, y, p, i)
        if _breaks_a_rule(ti, xi, yi, pi, last, limits):
            return False
        last = ti
        cx, cy = xs[xi], ys[yi]
        out_t[i], out_x[i], out_y[i], out_p[i] = ti, cx, cy, pi
        inside[i] = cx < card[0] and cy < card[1]
    return True


@_jit
def bin_mapped(t, x, y, p, begin, end, bin_us, columns, rows, counts):
    """Count events already in the card sensor's coordinates (``map_chunk``'s) from ``begin`` on
    into bin ``(t - begin) // bin_us`` of ``counts`` [bins, 2, height, width]: ``columns[x]`` and
    ``rows[y]`` (``mapping.frame_tables``) are each card coordinate's frame pixel, -1 off the crop
    or off the card. Stops at the first event at or after ``end``; returns how many came before."""
    k, edge = 0, begin + bin_us
    for i in range(len(t)):
        ti = t[i]
        if ti >= end:
            return i
        col, row = columns[x[i]], rows[y[i]]
        if col < 0 or row < 0:
            continue
        while ti >= edge:
            k += 1
            edge += bin_us
        counts[k, p[i], row, col] += 1
    return len(t)
