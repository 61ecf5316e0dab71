"""The DVS simulator and N-MNIST's saccade protocol."""

import numpy as np
import pytest

from spikeshot.events.array import EVENT_DTYPE, is_sorted
from spikeshot.events.dvs_sim import (
    _refractory_keep,
    record_motion,
    record_saccades,
    saccade_path,
    simulate,
    smooth_motion,
)

EPS = 0.01
EXACT = dict(threshold_sigma=0.0, refractory_us=0, noise_rate_hz=0.0, log_eps=EPS)


def ramp(log_start, log_end, n=2, shape=(1, 1)):
    """Frames whose log intensity (log(I + EPS)) goes linearly from log_start to log_end."""
    logs = np.linspace(log_start, log_end, n)
    return np.broadcast_to((np.exp(logs) - EPS)[:, None, None], (n, *shape)).copy()


def test_brightening_gives_on_events_darkening_off():
    lo = np.log(0.1 + EPS)
    hi = lo + 1.05  # 5 crossings of 0.2
    up = simulate(ramp(lo, hi), [0, 10_000], threshold=0.2, seed=0, **EXACT)
    down = simulate(ramp(hi, lo), [0, 10_000], threshold=0.2, seed=0, **EXACT)
    assert up.dtype == EVENT_DTYPE
    assert len(up) == 5 and (up["p"] == 1).all()
    assert len(down) == 5 and (down["p"] == 0).all()


def test_crossing_times_interpolate_log_intensity():
    # log intensity rises by 1.05 over 1 ms: crossings of 0.2 at 0.2/1.05 ms, 0.4/1.05 ms, ...
    base = np.log(0.2 + EPS)
    ev = simulate(ramp(base, base + 1.05), [5_000, 6_000], threshold=0.2, seed=0, **EXACT)
    expected = 5_000 + np.rint(np.arange(1, 6) * 0.2 / 1.05 * 1000)
    np.testing.assert_array_equal(ev["t"], expected)


def test_reference_carries_across_frames():
    # +0.15 per frame never crosses 0.2 in one interval, but four frames cross it three times.
    base = np.log(0.1 + EPS)
    frames = ramp(base, base + 0.6, n=5)
    ev = simulate(frames, [0, 1000, 2000, 3000, 4000], threshold=0.2, seed=0, **EXACT)
    assert len(ev) == 2  # 0.6 / 0.2 = 3 in exact arithmetic; floor keeps it strictly below
    ev = simulate(frames, [0, 1000, 2000, 3000, 4000], threshold=0.19, seed=0, **EXACT)
    np.testing.assert_array_equal(ev["t"], np.rint(np.array([0.19, 0.38, 0.57]) / 0.15 * 1000))


def test_count_scales_with_contrast_over_threshold():
    base = np.log(0.05 + EPS)
    counts = {
        (c, th): len(simulate(ramp(base, base + c), [0, 1000], threshold=th, seed=0, **EXACT))
        for c in (0.5, 1.05)
        for th in (0.1, 0.2)
    }
    assert counts == {(0.5, 0.1): 5, (0.5, 0.2): 2, (1.05, 0.1): 10, (1.05, 0.2): 5}


def test_static_image_gives_only_noise():
    frames = np.full((11, 10, 10), 0.5)
    ts = np.arange(11) * 100_000  # 1 s
    quiet = simulate(frames, ts, noise_rate_hz=0.0, seed=1)
    assert len(quiet) == 0
    noisy = simulate(frames, ts, noise_rate_hz=20.0, refractory_us=0, seed=1)
    # 20 Hz x 100 pixels x 1 s = 2000 expected; Poisson std 45
    assert 1800 < len(noisy) < 2200
    assert 0.45 < noisy["p"].mean() < 0.55
    per_pixel = np.bincount(noisy["y"].astype(int) * 10 + noisy["x"], minlength=100)
    assert per_pixel.min() > 0 and per_pixel.max() < 50
    assert noisy["t"].min() >= 0 and noisy["t"].max() <= 1_000_000 and is_sorted(noisy)


def test_refractory_period_is_per_pixel():
    # Two pixels cross 10 times within 1 ms (every 95 us); 300 us of refractory keeps every 4th.
    base = np.log(0.05 + EPS)
    frames = ramp(base, base + 2.1, shape=(1, 2))
    opts = {**EXACT, "refractory_us": 300}
    ev = simulate(frames, [0, 1000], threshold=0.2, seed=0, **opts)
    for x in (0, 1):
        t = ev["t"][ev["x"] == x]
        np.testing.assert_array_equal(t, np.rint(np.array([0.2, 1.0, 1.8]) / 2.1 * 1000))
    assert len(simulate(frames, [0, 1000], threshold=0.2, seed=0, **EXACT)) == 20


def test_refractory_filter_matches_sequential_rule():
    rng = np.random.default_rng(3)
    pix = rng.integers(0, 5, 400)
    t = rng.integers(0, 20_000, 400)
    span = 20_000 + 700 + 1
    key = np.sort(pix * span + t)
    keep = _refractory_keep(key, 700)
    expected, last = np.zeros(len(key), bool), {}
    for i, k in enumerate(key):
        p, tt = divmod(int(k), span)
        if p not in last or tt - last[p] >= 700:
            expected[i], last[p] = True, tt
    np.testing.assert_array_equal(keep, expected)


def test_threshold_mismatch_spreads_counts_across_pixels():
    base = np.log(0.05 + EPS)
    frames = ramp(base, base + 2.0, shape=(20, 20))
    opts = dict(refractory_us=0, noise_rate_hz=0.0, log_eps=EPS, seed=0)
    uniform = simulate(frames, [0, 1000], threshold=0.2, threshold_sigma=0.0, **opts)
    mixed = simulate(frames, [0, 1000], threshold=0.2, threshold_sigma=0.03, **opts)
    count = np.bincount(mixed["y"].astype(int) * 20 + mixed["x"], minlength=400)
    assert len(np.unique(np.bincount(uniform["y"].astype(int) * 20 + uniform["x"]))) == 1
    assert count.min() < 9 and count.max() > 11


def test_seeded_determinism():
    rng = np.random.default_rng(0)
    frames = rng.random((6, 8, 8))
    ts = np.arange(6) * 2000
    a = simulate(frames, ts, noise_rate_hz=50.0, seed=7)
    b = simulate(frames, ts, noise_rate_hz=50.0, seed=7)
    c = simulate(frames, ts, noise_rate_hz=50.0, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert is_sorted(a)


@pytest.mark.parametrize(
    ("frames", "ts", "match"),
    [
        (np.full((2, 3, 3), 1.5), [0, 1], "in \\[0, 1\\]"),
        (np.full((1, 3, 3), 0.5), [0], "N>=2"),
        (np.full((2, 3, 3), 0.5), [5, 5], "increase"),
        (np.full((2, 3, 3), 0.5), [0, 1, 2], "shape \\(2,\\)"),
        (np.full((2, 3, 3), 0.5), [0.0, 1.5], "whole microseconds"),
    ],
)
def test_bad_input_is_named(frames, ts, match):
    with pytest.raises(ValueError, match=match):
        simulate(frames, ts, seed=0)


def test_saccade_path_is_a_closed_triangle():
    ts, off = saccade_path(100.0, 4.0, 250.0)
    assert ts[0] == 0 and ts[-1] == 300_000 and (np.diff(ts) > 0).all()
    np.testing.assert_allclose(off[0], off[-1])
    corners = off[np.searchsorted(ts, [0, 100_000, 200_000])]
    np.testing.assert_allclose(corners[1] - corners[0], [2.0, 4.0])  # down and right
    np.testing.assert_allclose(corners[2] - corners[1], [2.0, -4.0])  # up and right
    np.testing.assert_allclose(off.mean(axis=0), [0.0, 0.0], atol=0.3)


def test_record_saccades_on_34x34():
    image = np.zeros((28, 28))
    image[8:20, 10:18] = 1.0
    ev = record_saccades(image, seed=0)
    assert ev.dtype == EVENT_DTYPE and is_sorted(ev)
    assert ev["x"].max() < 34 and ev["y"].max() < 34
    assert 0 <= ev["t"].min() and 280_000 < ev["t"].max() <= 300_000
    assert 500 < len(ev) < 20_000
    t, x, y = ev["t"], ev["x"].astype(float), ev["y"].astype(float)
    thirds = [(t >= k * 100_000) & (t < (k + 1) * 100_000) for k in range(3)]
    assert all(m.sum() > 0.15 * len(ev) for m in thirds)
    # Motion follows the triangle: down, then up-right, then left.
    halves = [(t >= a * 1000) & (t < (a + 50) * 1000) for a in range(0, 300, 50)]
    assert y[halves[1]].mean() - y[halves[0]].mean() > 1
    assert x[halves[3]].mean() - x[halves[2]].mean() > 0.5
    assert x[halves[5]].mean() - x[halves[4]].mean() < -1
    # Each saccade is slow at its ends, fast in the middle.
    assert ((t > 90_000) & (t < 110_000)).sum() < 0.5 * ((t > 40_000) & (t < 60_000)).sum()
    np.testing.assert_array_equal(ev, record_saccades(image, seed=0))


def _moving_bar(n=41, size=16):
    """A bright vertical bar sweeping across a dark field, one column per frame pair."""
    frames = np.zeros((n, size, size))
    for k in range(n):
        frames[k, :, (k // 2) % size] = 1.0
    return frames, np.arange(n) * 1000


def test_sensor_imperfections_default_to_none():
    frames, ts = _moving_bar()
    plain = simulate(frames, ts, seed=3)
    same = simulate(
        frames, ts, on_off_ratio=1.0, hot_pixels=0, keep_fraction=1.0, jitter_us=0.0, seed=3
    )
    np.testing.assert_array_equal(plain, same)


def test_on_off_ratio_hot_pixels_drops_and_jitter():
    frames, ts = _moving_bar()
    base = dict(threshold_sigma=0.0, noise_rate_hz=0.0, refractory_us=0, seed=3)
    plain = simulate(frames, ts, **base)
    on_share = plain["p"].mean()
    # Higher ON thresholds, lower OFF ones: fewer ON events, more OFF events.
    skew = simulate(frames, ts, on_off_ratio=2.0, **base)
    assert skew["p"].mean() < on_share - 0.1
    # Hot pixels: about rate x duration extra events, on that many pixels only.
    hot = simulate(np.zeros((2, 16, 16)), [0, 1_000_000], hot_pixels=3, hot_rate_hz=200.0, **base)
    assert 450 < len(hot) < 750
    assert len(np.unique(hot["y"].astype(int) * 16 + hot["x"])) == 3
    # Dropped events: the kept share is close to keep_fraction.
    kept = simulate(frames, ts, keep_fraction=0.5, **base)
    assert abs(len(kept) / len(plain) - 0.5) < 0.1
    # Jitter moves timestamps (here some before the only change, which starts at 50 ms) but
    # keeps them sorted and inside the recording.
    step = np.zeros((3, 16, 16))
    step[2] = 1.0
    times = [0, 50_000, 100_000]
    still = simulate(step, times, **base)
    jit = simulate(step, times, jitter_us=3000.0, **base)
    assert len(jit) == len(still) and is_sorted(jit)
    assert still["t"].min() >= 50_000 and jit["t"].min() < 50_000
    assert jit["t"].max() <= 100_000
    with pytest.raises(ValueError, match="keep_fraction"):
        simulate(frames, ts, keep_fraction=0.0, seed=0)
    with pytest.raises(ValueError, match="on_off_ratio"):
        simulate(frames, ts, on_off_ratio=0.0, seed=0)


def test_record_motion_still_image_is_silent_and_moving_one_is_not():
    image = np.zeros((12, 12))
    image[3:9, 5:7] = 1.0
    ts = np.arange(31) * 10_000
    still = (np.zeros((31, 2)), np.zeros(31), np.ones(31))
    quiet = dict(threshold_sigma=0.0, noise_rate_hz=0.0)
    assert len(record_motion(image, ts, *still, sensor=(20, 20), seed=0, **quiet)) == 0
    ts, offsets, angles, zooms = smooth_motion(
        np.random.default_rng(1), duration_ms=300, fps=100, amplitude_px=3, rotation_deg=20
    )
    assert ts[0] == 0 and ts[-1] == 300_000 and offsets.shape == (len(ts), 2)
    assert np.abs(offsets).max() <= 3.0 + 1e-9 and np.abs(np.rad2deg(angles)).max() <= 20 + 1e-9
    ev = record_motion(image, ts, offsets, angles, zooms, sensor=(20, 20), seed=0, **quiet)
    assert len(ev) > 200 and is_sorted(ev)
    assert ev["x"].max() < 20 and ev["y"].max() < 20
    # The shape stays near the centre: events fall around the middle of the sensor.
    assert abs(ev["x"].mean() - 9.5) < 3 and abs(ev["y"].mean() - 9.5) < 3
    # A rotation alone moves the bar's ends: events without any translation.
    turn = (np.zeros((len(ts), 2)), np.deg2rad(np.linspace(0, 90, len(ts))), np.ones(len(ts)))
    assert len(record_motion(image, ts, *turn, sensor=(20, 20), seed=0, **quiet)) > 100
    with pytest.raises(ValueError, match="one entry per frame"):
        record_motion(image, ts, offsets[:-1], angles, zooms, seed=0)
