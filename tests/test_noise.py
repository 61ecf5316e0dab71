"""Background-activity filter against a plain reference, on random and real events."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeshot.events.array import EventError, empty, make_events
from spikeshot.events.noise import background_activity_filter


def reference(events, time_window_us, radius):
    """Keep event i when another pixel within ``radius`` fired at t_i - window < t <= t_i."""
    t, x, y = (events[k].astype(np.int64) for k in "txy")
    keep = np.zeros(len(events), bool)
    for i in range(len(events)):
        near = (abs(x - x[i]) <= radius) & (abs(y - y[i]) <= radius)
        other_pixel = (x != x[i]) | (y != y[i])
        recent = (t > t[i] - time_window_us) & (t <= t[i])
        keep[i] = (near & other_pixel & recent).any()
    return events[keep]


@st.composite
def streams(draw):
    width, height = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n = draw(st.integers(0, 50))
    t = sorted(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    x = draw(st.lists(st.integers(0, width - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, height - 1), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return make_events(t, x, y, p), width, height


@settings(max_examples=300, deadline=None)
@given(streams(), st.integers(1, 12), st.integers(1, 2))
def test_matches_reference(stream, window, radius):
    events, width, height = stream
    kept = background_activity_filter(events, width, height, window, radius)
    np.testing.assert_array_equal(kept, reference(events, window, radius))


def test_rules_by_hand():
    # (t, x, y): a supported pair, a lone event, a same-pixel repeat, a stale neighbour.
    events = make_events(
        [0, 5, 5, 20, 21, 100, 130],
        [1, 2, 9, 9, 5, 5, 6],
        [1, 2, 9, 9, 5, 5, 5],
        [1, 0, 1, 1, 0, 0, 1],
    )
    kept = background_activity_filter(events, 12, 12, time_window_us=30)
    # t=5 at (2,2) is supported by t=0 at (1,1); t=0 has no past neighbour; the pixel (9,9)
    # cannot support itself; t=130 at (6,5) sees t=100 at (5,5) exactly 30 us back: too old.
    np.testing.assert_array_equal(kept["t"], [5])
    simultaneous = make_events([7, 7], [0, 1], [0, 0], [1, 1])
    assert len(background_activity_filter(simultaneous, 2, 1, 1)) == 2


def test_radius_widens_the_neighbourhood():
    events = make_events([0, 1], [0, 2], [0, 2], [1, 1])
    assert len(background_activity_filter(events, 3, 3, 10, radius=1)) == 0
    np.testing.assert_array_equal(background_activity_filter(events, 3, 3, 10, radius=2)["t"], [1])


def test_unsorted_input_is_sorted_and_not_modified():
    events = make_events([5, 0], [1, 0], [0, 0], [1, 1])
    before = events.copy()
    np.testing.assert_array_equal(background_activity_filter(events, 2, 1, 10)["t"], [5])
    np.testing.assert_array_equal(events, before)


def test_empty_input():
    out = background_activity_filter(empty(), 4, 4, 100)
    assert len(out) == 0 and out.dtype == empty().dtype


def test_bad_arguments():
    events = make_events([0], [4], [0], [1])
    with pytest.raises(EventError, match="events.x: must be < sensor width 4"):
        background_activity_filter(events, 4, 4, 10)
    for kwargs, name in (
        ({"width": 0}, "width"),
        ({"time_window_us": 1.5}, "time_window_us"),
        ({"radius": True}, "radius"),
        ({"height": -2}, "height"),
    ):
        args = {"width": 8, "height": 8, "time_window_us": 10} | kwargs
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            background_activity_filter(events, **args)


def test_matches_reference_on_a_real_recording(realdata):
    path = realdata / "sample_nmnist.bin"
    # N-MNIST: 5 bytes per event, x, y, then polarity bit and 23-bit time (big-endian).
    raw = np.frombuffer(path.read_bytes(), np.uint8).reshape(-1, 5).astype(np.int64)
    word = (raw[:, 2] << 16) | (raw[:, 3] << 8) | raw[:, 4]
    events = make_events(word & 0x7FFFFF, raw[:, 0], raw[:, 1], word >> 23)
    assert len(events) == 4325 and events[0].tolist() == (654, 7, 15, 1)
    kept = background_activity_filter(events, 34, 34, time_window_us=2000)
    np.testing.assert_array_equal(kept, reference(events, 2000, 1))
    assert 0 < len(kept) < len(events)
