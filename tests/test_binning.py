"""Binning events into count frames: a slow reference, tonic's ToFrame, geometry and edge cases."""

import json

import aedat
import numpy as np
import pytest
import tonic
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeshot.events.array import EventError, as_events, empty, make_events
from spikeshot.events.binning import FrameGeometry, _searchsorted_left, bin_batch, bin_events


def reference(events, g, t0=None):
    """One event at a time, straight from the documented conventions."""
    out = np.zeros(g.shape, np.int64)
    if len(events) == 0:
        return out
    start = int(events["t"][0]) if t0 is None else t0
    x0, y0, _, _ = g.crop_box
    for t, x, y, p in events.tolist():
        dt, cx, cy = t - start, x - x0, y - y0
        if not 0 <= dt < g.window_us or p not in (0, 1):
            continue
        if 0 <= cx < g.width * g.downsample and 0 <= cy < g.height * g.downsample:
            out[dt // g.bin_us, p, cy // g.downsample, cx // g.downsample] += 1
    return out


@st.composite
def cases(draw):
    sw, sh = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    crop = None
    if draw(st.booleans()):
        x0, y0 = draw(st.integers(0, sw - 1)), draw(st.integers(0, sh - 1))
        crop = (x0, y0, draw(st.integers(1, sw - x0)), draw(st.integers(1, sh - y0)))
    cw, ch = (sw, sh) if crop is None else crop[2:]
    bins = draw(st.integers(1, 4))
    g = FrameGeometry(
        sensor_width=sw,
        sensor_height=sh,
        crop=crop,
        downsample=draw(st.integers(1, min(cw, ch))),
        bins=bins,
        window_us=bins * draw(st.integers(1, 5)),
    )
    n = draw(st.integers(0, 60))
    coord = st.one_of(st.integers(0, max(sw, sh) + 2), st.just(65535))
    t = sorted(draw(st.lists(st.integers(-3, 30), min_size=n, max_size=n)))
    x = draw(st.lists(coord, min_size=n, max_size=n))
    y = draw(st.lists(coord, min_size=n, max_size=n))
    p = draw(st.lists(st.sampled_from([0, 1, 1, 0, 2, 255]), min_size=n, max_size=n))
    t0 = draw(st.one_of(st.none(), st.integers(-5, 30)))
    return raw_events(t, x, y, p), g, t0


def raw_events(t, x, y, p):
    """Events stored field by field: polarities other than 0/1 (which binning drops) included."""
    ev = empty(len(t))
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


@settings(max_examples=300, deadline=None)
@given(cases())
def test_matches_slow_reference(case):
    events, g, t0 = case
    frames = bin_events(events, g, t0)
    assert frames.shape == g.shape and frames.dtype == np.float32
    np.testing.assert_array_equal(frames, reference(events, g, t0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-50, 50), max_size=40), st.lists(st.integers(-60, 60), max_size=10))
def test_bisection_matches_searchsorted(a, v):
    a, v = np.sort(np.array(a, np.int64)), np.array(v, np.int64)
    strided = make_events(a, np.zeros(len(a)), np.zeros(len(a)), np.zeros(len(a)))["t"]
    np.testing.assert_array_equal(_searchsorted_left(strided, v), np.searchsorted(a, v))


def tonic_frames(events, width, height, bin_us, t0, window_us):
    to_frame = tonic.transforms.ToFrame(
        sensor_size=(width, height, 2), time_window=bin_us, start_time=t0, end_time=t0 + window_us
    )
    return to_frame(events.copy())


def test_matches_tonic_to_frame_with_the_same_bin_edges():
    """Both use half-open bins [t0 + k*bin, t0 + (k+1)*bin): an event on an edge opens the next
    bin, one at t0 + window is dropped, and so is one before t0."""
    rng = np.random.default_rng(0)
    n, width, height = 5000, 34, 34
    t = np.sort(np.concatenate([rng.integers(0, 1000, n - 7), [99, 100, 199, 200, 599, 600, 601]]))
    events = make_events(
        t, rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n)
    )
    g = FrameGeometry(sensor_width=width, sensor_height=height, bins=5, window_us=500)
    ours = bin_events(events, g, t0=100)
    theirs = tonic_frames(events, width, height, 100, 100, 500)
    assert theirs.shape == ours.shape
    np.testing.assert_array_equal(ours, theirs)
    assert ours.sum() == np.count_nonzero((t >= 100) & (t < 600))


def test_tonic_n_time_bins_uses_other_edges():
    """tonic's ``n_time_bins=B`` mode takes bins of (t_last - t_first) // B from the first event,
    so its frames end before the last event; ours span the whole stated window."""
    events = make_events(np.arange(100), np.zeros(100), np.zeros(100), np.ones(100))
    theirs = tonic.transforms.ToFrame(sensor_size=(1, 1, 2), n_time_bins=10)(events.copy())
    ours = bin_events(
        events, FrameGeometry(sensor_width=1, sensor_height=1, bins=10, window_us=100)
    )
    assert theirs.sum() == 90  # width 99 // 10 = 9 us: events 90..99 fall outside
    assert ours.sum() == 100 and (ours[:, 1, 0, 0] == 10).all()


def test_matches_tonic_on_a_real_recording(realdata):
    path = realdata / "sample.aedat4"
    events = as_events(
        np.concatenate([p["events"] for p in aedat.Decoder(str(path)) if "events" in p])
    )
    g = FrameGeometry(sensor_width=320, sensor_height=240, bins=20, window_us=500_000)
    t0 = int(events["t"][0]) + 10_000
    ours = bin_events(events, g, t0)
    np.testing.assert_array_equal(ours, tonic_frames(events, 320, 240, g.bin_us, t0, g.window_us))
    assert ours.sum() > 50_000


def test_window_edges():
    g = FrameGeometry(sensor_width=2, sensor_height=1, bins=4, window_us=40)
    t = [999, 1000, 1009, 1010, 1029, 1030, 1039, 1040]
    frames = bin_events(make_events(t, [0] * 8, [0] * 8, [1] * 8), g, t0=1000)
    np.testing.assert_array_equal(frames[:, 1, 0, 0], [2, 1, 1, 2])
    # t0 defaults to the first event: 999 opens bin 0 and 1039 is past the window.
    np.testing.assert_array_equal(
        bin_events(make_events(t, [0] * 8, [0] * 8, [1] * 8), g)[:, 1, 0, 0], [2, 2, 0, 2]
    )


def test_crop_downsample_sums_blocks_and_drops_the_ragged_edge():
    g = FrameGeometry(
        sensor_width=10, sensor_height=8, crop=(2, 1, 7, 5), downsample=2, bins=1, window_us=1
    )
    assert (g.height, g.width) == (2, 3)
    ys, xs = np.mgrid[0:8, 0:10]
    n = xs.size
    frames = bin_events(make_events(np.zeros(n), xs.ravel(), ys.ravel(), np.zeros(n)), g)
    # Every 2x2 block of the crop holds 4 events; column 8 and row 5 (ragged) are dropped.
    np.testing.assert_array_equal(frames[0, 0], np.full((2, 3), 4))
    assert frames[0, 1].sum() == 0


def test_polarity_channels_and_bad_polarity_dropped():
    g = FrameGeometry(sensor_width=3, sensor_height=1, bins=1, window_us=10)
    frames = bin_events(raw_events([0, 0, 0, 0], [0, 1, 2, 2], [0] * 4, [0, 1, 1, 7]), g)
    np.testing.assert_array_equal(frames[0], [[[1, 0, 0]], [[0, 1, 1]]])


def test_empty_input_and_empty_window():
    g = FrameGeometry(sensor_width=4, sensor_height=3, bins=2, window_us=10)
    assert bin_events(empty(), g).shape == (2, 2, 3, 4)
    assert not bin_events(empty(), g).any()
    late = make_events([50, 60], [0, 1], [0, 1], [0, 1])
    assert not bin_events(late, g, t0=0).any()


def test_integer_dtype_and_overflow():
    g = FrameGeometry(sensor_width=1, sensor_height=1, bins=1, window_us=1)
    events = make_events(np.zeros(300), np.zeros(300), np.zeros(300), np.ones(300))
    frames = bin_events(events, g, dtype=np.int16)
    assert frames.dtype == np.int16 and frames[0, 1, 0, 0] == 300
    with pytest.raises(ValueError, match="count of 300 does not fit in uint8"):
        bin_events(events, g, dtype=np.uint8)
    with pytest.raises(ValueError, match="integer or float"):
        bin_events(events, g, dtype=bool)


def test_bad_events_argument():
    g = FrameGeometry(sensor_width=1, sensor_height=1, bins=1, window_us=1)
    with pytest.raises(EventError, match="events.dtype"):
        bin_events(np.zeros(3), g)
    with pytest.raises(EventError, match="events.shape"):
        bin_events(empty(4).reshape(2, 2), g)


def test_batch_stacks_each_recording():
    g = FrameGeometry(
        sensor_width=5, sensor_height=4, crop=(1, 0, 4, 4), downsample=2, bins=3, window_us=30
    )
    rng = np.random.default_rng(1)
    recs = [
        make_events(
            np.sort(rng.integers(0, 40, k)),
            rng.integers(0, 5, k),
            rng.integers(0, 4, k),
            rng.integers(0, 2, k),
        )
        for k in (0, 20, 50)
    ]
    batch = bin_batch(recs, g, t0=[0, 5, 3])
    assert batch.shape == (3, *g.shape)
    for frames, rec, t0 in zip(batch, recs, [0, 5, 3], strict=True):
        np.testing.assert_array_equal(frames, reference(rec, g, t0))
    with pytest.raises(ValueError, match="2 start times for 3 recordings"):
        bin_batch(recs, g, t0=[0, 1])


def test_geometry_round_trips_through_json():
    g = FrameGeometry(
        sensor_width=240,
        sensor_height=180,
        crop=(0, 0, 240, 180),
        downsample=6,
        bins=100,
        window_us=100_000,
    )
    assert (g.height, g.width, g.bin_us) == (30, 40, 1000)
    back = FrameGeometry.from_dict(json.loads(json.dumps(g.to_dict())))
    assert back == g and back.crop == (0, 0, 240, 180)
    full = FrameGeometry(sensor_width=34, sensor_height=34, bins=1, window_us=1)
    assert FrameGeometry.from_dict(full.to_dict()) == full and full.to_dict()["crop"] is None


@pytest.mark.parametrize(
    "change, match",
    [
        ({"sensor_width": 0}, r"sensor_width: must be >= 1"),
        ({"sensor_height": 70000}, r"sensor_height: must be <= 65535"),
        ({"downsample": 2.0}, r"downsample: expected an integer"),
        ({"bins": True}, r"bins: expected an integer"),
        ({"window_us": 10, "bins": 3}, r"window_us: 10 is not a multiple of bins=3"),
        ({"crop": (0, 0, 5)}, r"crop: expected \(x0, y0, width, height\)"),
        ({"crop": (-1, 0, 5, 5)}, r"crop: need x0, y0 >= 0"),
        ({"crop": (10, 0, 30, 5)}, r"crop: x0 \+ width = 40 exceeds sensor_width 34"),
        ({"crop": (0, 30, 5, 5)}, r"crop: y0 \+ height = 35 exceeds sensor_height 34"),
        ({"crop": (0, 0, 5, 3), "downsample": 4}, r"downsample: 4 exceeds the crop size 5x3"),
    ],
)
def test_geometry_rejects_bad_fields(change, match):
    fields = {"sensor_width": 34, "sensor_height": 34, "bins": 10, "window_us": 100} | change
    with pytest.raises(ValueError, match=match):
        FrameGeometry(**fields)


def test_geometry_from_dict_rejects_unknown_and_missing_keys():
    d = FrameGeometry(sensor_width=4, sensor_height=4, bins=1, window_us=1).to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['burn_in'\]"):
        FrameGeometry.from_dict(d | {"burn_in": 3})
    del d["bins"]
    with pytest.raises(ValueError, match=r"missing keys \['bins'\]"):
        FrameGeometry.from_dict(d)
