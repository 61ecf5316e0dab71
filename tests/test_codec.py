"""The wire codec: exact byte layout, round trips, and every malformed input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spikeshot.events.array import EVENT_DTYPE, EventError, empty, make_events
from spikeshot.events.codec import (
    EncodedEvents,
    decode,
    encode,
    pack,
    packed_columns,
)


def test_layout_is_columnar_little_endian():
    events = make_events([1, -2], [0x0102, 7], [3, 0xFFFF], [1, 0])
    enc = encode(events)
    assert isinstance(enc, EncodedEvents)
    assert enc.t == (1).to_bytes(8, "little", signed=True) + (-2).to_bytes(8, "little", signed=True)
    assert enc.x == b"\x02\x01\x07\x00"
    assert enc.y == b"\x03\x00\xff\xff"
    assert enc.p == b"\x01\x00"


@given(arrays(EVENT_DTYPE, st.integers(0, 200)))
def test_round_trip(events):
    enc = encode(events)
    assert [len(c) for c in enc] == [8 * len(events), 2 * len(events), 2 * len(events), len(events)]
    back = decode(*enc)
    assert back.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(back, events)


@given(arrays(EVENT_DTYPE, st.integers(1, 50)), st.sampled_from([bytearray, memoryview]))
def test_decode_accepts_any_bytes_like_and_owns_its_memory(events, kind):
    cols = [kind(bytearray(c)) for c in encode(events)]
    back = decode(*cols)
    np.testing.assert_array_equal(back, events)
    assert back.flags.writeable
    cols[0][:] = b"\xff" * (8 * len(events))  # decode copied: its events do not change
    np.testing.assert_array_equal(back, events)


def test_encode_strided_slice_and_empty():
    events = make_events(np.arange(10), np.arange(10), np.arange(10), np.arange(10) % 2)[::3]
    np.testing.assert_array_equal(decode(*encode(events)), events)
    assert encode(empty()) == EncodedEvents(b"", b"", b"", b"")
    assert len(decode(b"", b"", b"", b"")) == 0


@pytest.mark.parametrize(
    "column, cut, field, match",
    [
        ("t", 1, "t", r"events\.t: byte length 23 is not a multiple of 8 \(int64\)"),
        ("x", 1, "x", r"events\.x: byte length 5 is not a multiple of 2 \(uint16\)"),
        ("y", 1, "y", r"events\.y: byte length 5 is not a multiple of 2 \(uint16\)"),
        ("x", 2, "x", r"events\.x: 2 values but t has 3"),
        ("y", 4, "y", r"events\.y: 1 values but t has 3"),
        ("p", 1, "p", r"events\.p: 2 values but t has 3"),
        ("t", 8, "x", r"events\.x: 3 values but t has 2"),
    ],
)
def test_decode_rejects_malformed_columns(column, cut, field, match):
    enc = encode(make_events([1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 0]))._asdict()
    enc[column] = enc[column][:-cut]
    with pytest.raises(EventError, match=match) as info:
        decode(**enc)
    assert info.value.field == field


def test_decode_rejects_extra_bytes_of_p():
    enc = encode(make_events([1], [2], [3], [1]))
    with pytest.raises(EventError, match=r"events\.p: 2 values but t has 1"):
        decode(enc.t, enc.x, enc.y, enc.p + b"\x00")


def test_encode_rejects_other_arrays():
    with pytest.raises(EventError, match=r"events\.dtype"):
        encode(np.zeros(3, np.int64))
    with pytest.raises(EventError, match=r"events\.dtype"):
        encode([(1, 2, 3, 1)])
    with pytest.raises(EventError, match=r"events\.shape"):
        encode(empty(4).reshape(2, 2))


def test_columns_validate_and_bin_like_the_array():
    from spikeshot.events import EventColumns, FrameGeometry, Limits, bin_events, validate
    from spikeshot.events.codec import decode_columns

    rng = np.random.default_rng(3)
    n = 500
    ev = make_events(
        np.sort(rng.integers(0, 10_000, n)),
        rng.integers(0, 20, n),
        rng.integers(0, 10, n),
        rng.integers(0, 2, n),
    )
    cols = decode_columns(*encode(ev))
    assert isinstance(cols, EventColumns) and len(cols) == n
    g = FrameGeometry(sensor_width=20, sensor_height=10, bins=4, window_us=10_000)
    limits = Limits(width=20, height=10)
    np.testing.assert_array_equal(bin_events(validate(cols, limits), g), bin_events(ev, g))
    bad = decode_columns(*encode(ev))
    bad_y = bad.y.copy()
    bad_y[7] = 10
    with pytest.raises(
        EventError, match=r"events.y: must be < sensor height 10 \(first bad index 7\)"
    ):
        validate(EventColumns(bad.t, bad.x, bad_y, bad.p), limits)


def test_packed_layout():
    events = make_events([-5, -5, 2**32 - 6], [0x0102, 7, 0xFFFF], [3, 0x7FFF, 0], [1, 0, 1])
    origin, dt, xyp = pack(events)
    assert origin == -5 and dt.tobytes() == (0).to_bytes(4, "little") * 2 + b"\xff" * 4
    assert xyp.tolist() == [0x0102 | 3 << 16 | 1 << 31, 7 | 0x7FFF << 16, 0xFFFF | 1 << 31]
    top = packed_columns(2**63 - 2**32, b"\xff" * 4, b"\0" * 4).unpack()  # the last origin
    assert top.t.tolist() == [2**63 - 1]


@given(arrays(EVENT_DTYPE, st.integers(0, 200)))
def test_packed_round_trip_or_not_packed(events):
    """Events pack and unpack to themselves, or do not pack (then they go as columns)."""
    packing = pack(events[::-1] if len(events) % 3 == 0 else events)  # strided views too
    events = events[::-1] if len(events) % 3 == 0 else events
    if packing is None:  # a value packing would change: span, row, polarity, origin
        t, y, p = events["t"].astype(object), events["y"], events["p"]
        assert (
            min(t) < t[0]
            or max(t) - t[0] >= 2**32
            or y.max() >= 2**15
            or p.max() > 1
            or t[0] > 2**63 - 2**32
        )
        return
    origin, dt, xyp = packing
    back = packed_columns(origin, dt.tobytes(), xyp.tobytes()).unpack().to_array()
    np.testing.assert_array_equal(back, events)


@pytest.mark.parametrize(
    "t",
    [
        [5, 4, 6],  # t[1] - t[0] < 0 would wrap
        [0, 2**32],  # a span uint32 cannot hold
        [2**63 - 1, -(2**63)],  # int64 wraps the difference to 1: the origin is too high
    ],
)
def test_events_that_would_change_are_not_packed(t):
    assert pack(make_events(t, [0] * len(t), [0] * len(t), [0] * len(t))) is None
    assert pack(make_events(t[1:], [0] * (len(t) - 1), [0] * (len(t) - 1), [1] * (len(t) - 1)))


@pytest.mark.parametrize(
    "origin, dt, xyp, field, match",
    [
        (2**63 - 2**32 + 1, b"", b"", "t_origin", r"events\.t_origin: must be at most 2\^63"),
        (0, b"\0" * 6, b"\0" * 8, "dt", r"events\.dt: byte length 6 is not a multiple of 4"),
        (0, b"\0" * 8, b"\0" * 7, "xyp", r"events\.xyp: byte length 7 is not a multiple of 4"),
        (0, b"\0" * 8, b"\0" * 4, "xyp", r"events\.xyp: 1 values but dt has 2"),
    ],
)
def test_packed_columns_reject_malformed_input(origin, dt, xyp, field, match):
    with pytest.raises(EventError, match=match) as info:
        packed_columns(origin, dt, xyp)
    assert info.value.field == field
