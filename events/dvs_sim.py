"""A DVS simulator (intensity frames -> events) and N-MNIST's three-saccade recording protocol.

``simulate`` follows the usual model of a dynamic vision sensor (ESIM, v2e): each pixel remembers
a reference log intensity and emits an ON (OFF) event each time the log intensity rises (falls) by
its contrast threshold from that reference, which then moves by one threshold. Log intensity is
interpolated linearly between frames, so the several crossings a pixel makes within one frame
interval get timestamps spread through it. Thresholds vary per pixel (mismatch), a pixel is blind
for a refractory period after each event, and background noise events arrive as a Poisson process.
Everything random is drawn from one seeded generator.

``record_saccades`` is N-MNIST's protocol (Orchard et al. 2015): a static image on a 34x34 sensor
seen while the sensor makes three saccades along a triangle, about 100 ms each.
"""

from __future__ import annotations

import numpy as np

from spikeshot.events.array import EVENT_DTYPE

# Vertices of N-MNIST's saccade triangle, in units of the amplitude, as (dx, dy) of the image on
# the sensor: down and slightly right, then up and right, then back left (the order and directions
# measured from the event centroid of a real N-MNIST recording).
_TRIANGLE = np.array([[0.0, 0.0], [0.5, 1.0], [1.0, 0.0], [0.0, 0.0]])


def _check_frames(frames, timestamps_us) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames, dtype=np.float64)
    ts = np.asarray(timestamps_us)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ValueError(f"frames must have shape [N>=2, H, W], got {frames.shape}")
    n, h, w = frames.shape
    if h > 65536 or w > 65536:
        raise ValueError(f"frames of {h}x{w} exceed the event array's 16-bit coordinates")
    if not np.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
        raise ValueError("frames must hold finite intensities in [0, 1]")
    if ts.shape != (n,):
        raise ValueError(f"timestamps_us must have shape ({n},) to match frames, got {ts.shape}")
    if not np.issubdtype(ts.dtype, np.integer):
        if not np.array_equal(ts, np.round(ts)):
            raise ValueError("timestamps_us must be whole microseconds")
    ts = ts.astype(np.int64)
    if (np.diff(ts) <= 0).any():
        raise ValueError("timestamps_us must increase strictly")
    return frames, ts


def _crossings(log_i: np.ndarray, ts: np.ndarray, c_on: np.ndarray, c_off: np.ndarray):
    """Threshold crossings of every pixel: (float times, flat pixel indices, polarities).

    The loop over frame intervals only counts crossings and moves the references; the crossings
    themselves are expanded and timed in one vectorised pass afterwards.
    """
    ref = log_i[0].copy()
    k_all, pix_all, cnt_all, ref_all, step_all = [], [], [], [], []
    for k in range(len(ts) - 1):
        d = log_i[k + 1] - ref
        c = np.where(d > 0, c_on, c_off)
        n = np.floor(np.abs(d) / c)
        idx = np.flatnonzero(n)
        if idx.size == 0:
            continue
        step = np.copysign(c[idx], d[idx])
        k_all.append(np.full(idx.size, k))
        pix_all.append(idx)
        cnt_all.append(n[idx].astype(np.int64))
        ref_all.append(ref[idx])
        ref[idx] += n[idx] * step
        step_all.append(step)
    if not k_all:
        return np.empty(0), np.empty(0, np.int64), np.empty(0, bool)
    cnt = np.concatenate(cnt_all)
    k = np.repeat(np.concatenate(k_all), cnt)
    pix = np.repeat(np.concatenate(pix_all), cnt)
    step = np.repeat(np.concatenate(step_all), cnt)
    j = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
    level = np.repeat(np.concatenate(ref_all), cnt) + j * step
    l0, l1 = log_i[k, pix], log_i[k + 1, pix]
    frac = np.clip((level - l0) / (l1 - l0), 0.0, 1.0)
    t = ts[k] + frac * (ts[k + 1] - ts[k])
    return t, pix, step > 0


def _refractory_keep(key: np.ndarray, refractory_us: int) -> np.ndarray:
    """Mask of events kept when each pixel ignores events within ``refractory_us`` of its last kept
    one. ``key`` is ``pixel * span + time`` (span > time range + refractory period), sorted.

    Each round finds the events certainly kept (first of their pixel, or at least the refractory
    period after the previous surviving event) and drops every event inside their refractory
    windows; removal only widens gaps, so this reaches the sequential result.
    """
    keep = np.ones(len(key), bool)
    if refractory_us <= 0 or len(key) < 2:
        return keep
    while True:
        idx = np.flatnonzero(keep)
        k = key[idx]
        anchor = np.concatenate(([True], np.diff(k) >= refractory_us))
        if anchor.all():
            return keep
        a = np.flatnonzero(anchor)
        end = np.searchsorted(k, k[a] + refractory_us, side="left")
        size = len(idx) + 1
        cover = np.bincount(a + 1, minlength=size) - np.bincount(end, minlength=size)
        keep[idx[np.cumsum(cover[:-1]) > 0]] = False


def simulate(
    frames,
    timestamps_us,
    *,
    threshold: float = 0.2,
    threshold_sigma: float = 0.03,
    refractory_us: int = 1000,
    noise_rate_hz: float = 0.1,
    log_eps: float = 0.3,
    on_off_ratio: float = 1.0,
    hot_pixels: int = 0,
    hot_rate_hz: float = 0.0,
    keep_fraction: float = 1.0,
    jitter_us: float = 0.0,
    seed: int,
) -> np.ndarray:
    """Events a DVS would emit watching ``frames`` ([N, H, W] intensities in [0, 1]) shown at
    ``timestamps_us`` ([N], strictly increasing microseconds).

    ``threshold`` is the mean contrast threshold in log intensity (``log(I + log_eps)``), drawn per
    pixel and polarity from a normal of std ``threshold_sigma`` (clipped below at a quarter of the
    mean). No events are emitted for the first frame: it sets every pixel's reference. A pixel
    ignores crossings within ``refractory_us`` of its last event (its reference still follows
    them, so fast changes lose events as on a real sensor). Background noise arrives at
    ``noise_rate_hz`` per pixel, uniform in time and polarity. The default ``log_eps`` of 0.3
    (a log response flattened near black) gives N-MNIST-like counts for saccade recordings of
    digits, about 4,000 events.

    The imperfections of real sensors, for domain randomisation: ``on_off_ratio`` makes ON
    thresholds ``sqrt(ratio)`` times the mean and OFF thresholds that much smaller (an ON/OFF
    imbalance); ``hot_pixels`` random pixels fire at ``hot_rate_hz`` each, either polarity;
    each event survives with probability ``keep_fraction`` (a sensor that drops events); and
    timestamps move by a normal jitter of std ``jitter_us`` (kept inside the recording).
    Returns an ``EVENT_DTYPE`` array sorted by time, x = column, y = row.
    """
    frames, ts = _check_frames(frames, timestamps_us)
    if not threshold > 0 or not threshold_sigma >= 0 or not log_eps > 0:
        raise ValueError("threshold and log_eps must be > 0 and threshold_sigma >= 0")
    if refractory_us < 0 or noise_rate_hz < 0:
        raise ValueError("refractory_us and noise_rate_hz must be >= 0")
    if not on_off_ratio > 0 or hot_pixels < 0 or hot_rate_hz < 0 or jitter_us < 0:
        raise ValueError("need on_off_ratio > 0 and hot_pixels, hot_rate_hz, jitter_us >= 0")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    n, h, w = frames.shape
    rng = np.random.default_rng(seed)
    npix = h * w
    c_on, c_off = np.maximum(rng.normal(threshold, threshold_sigma, (2, npix)), threshold / 4)
    c_on, c_off = c_on * np.sqrt(on_off_ratio), c_off / np.sqrt(on_off_ratio)

    log_i = np.log(frames.reshape(n, npix) + log_eps)
    t, pix, pol = _crossings(log_i, ts, c_on, c_off)
    t = np.rint(t).astype(np.int64)

    n_noise = rng.poisson(noise_rate_hz * npix * (ts[-1] - ts[0]) * 1e-6)
    t = np.concatenate([t, rng.integers(ts[0], ts[-1], n_noise, endpoint=True)])
    pix = np.concatenate([pix, rng.integers(0, npix, n_noise)])
    pol = np.concatenate([pol, rng.integers(0, 2, n_noise).astype(bool)])
    if hot_pixels:
        hot = rng.choice(npix, size=min(hot_pixels, npix), replace=False)
        n_hot = rng.poisson(hot_rate_hz * (ts[-1] - ts[0]) * 1e-6, len(hot))
        t = np.concatenate([t, rng.integers(ts[0], ts[-1], n_hot.sum(), endpoint=True)])
        pix = np.concatenate([pix, np.repeat(hot, n_hot)])
        pol = np.concatenate([pol, rng.integers(0, 2, n_hot.sum()).astype(bool)])

    span = int(ts[-1] - ts[0]) + int(refractory_us) + 1
    key = pix * span + (t - ts[0])
    order = np.argsort(key)
    keep = order[_refractory_keep(key[order], int(refractory_us))]
    t, pix, pol = t[keep], pix[keep], pol[keep]
    if keep_fraction < 1:
        kept = rng.random(len(t)) < keep_fraction
        t, pix, pol = t[kept], pix[kept], pol[kept]
    if jitter_us:
        t = np.clip(t + np.rint(rng.normal(0, jitter_us, len(t))).astype(np.int64), ts[0], ts[-1])

    order = np.argsort(t, kind="stable")
    ev = np.empty(len(order), dtype=EVENT_DTYPE)
    ev["t"] = t[order]
    ev["x"] = pix[order] % w
    ev["y"] = pix[order] // w
    ev["p"] = pol[order]
    return ev


def _check_image(image, sensor: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must have shape [h, w], got {img.shape}")
    width, height = sensor
    if width <= 0 or height <= 0:
        raise ValueError(f"sensor must be (width, height) > 0, got {sensor}")
    return img, (width, height)


def _shift_matrices(offsets: np.ndarray, out: int, size: int) -> np.ndarray:
    """[F, out, size] linear-interpolation matrices sampling a 1-D signal of ``size`` samples at
    ``arange(out) - offsets[f]`` (zero outside)."""
    u = np.arange(out)[None, :, None] - offsets[:, None, None]
    return np.maximum(0.0, 1.0 - np.abs(u - np.arange(size)[None, None, :]))


def saccade_path(
    saccade_ms: float, amplitude_px: float, fps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Frame times (int64 us from 0) and image offsets [F, 2] (dx, dy in pixels, centred on the
    triangle's centroid) of the three saccades. Each saccade moves with a raised-cosine velocity
    profile: still at its ends, fastest midway, as the event rate of real N-MNIST recordings shows.
    """
    if not saccade_ms > 0 or not fps > 0 or not amplitude_px >= 0:
        raise ValueError("saccade_ms and fps must be > 0 and amplitude_px >= 0")
    total_us = 3 * saccade_ms * 1000.0
    n_frames = max(int(round(3 * saccade_ms * fps / 1000.0)), 3) + 1
    ts = np.rint(np.linspace(0.0, total_us, n_frames)).astype(np.int64)
    phase = np.minimum(ts / (saccade_ms * 1000.0), 3.0)
    s = np.minimum(phase.astype(np.int64), 2)
    ease = (1.0 - np.cos(np.pi * (phase - s))) / 2.0
    path = _TRIANGLE[s] + (_TRIANGLE[s + 1] - _TRIANGLE[s]) * ease[:, None]
    centroid = _TRIANGLE[:3].mean(axis=0)
    return ts, (path - centroid) * amplitude_px


def record_saccades(
    image,
    *,
    sensor: tuple[int, int] = (34, 34),
    saccade_ms: float = 100.0,
    amplitude_px: float = 4.0,
    fps: float = 250.0,
    seed: int,
    **simulate_options,
) -> np.ndarray:
    """Record a static ``image`` ([h, w] in [0, 1]) as N-MNIST did: placed centred on a
    ``sensor`` = (width, height) DVS and moved along a triangle of three saccades of
    ``saccade_ms`` each and ``amplitude_px`` in size, rendered at ``fps`` frames per second with
    bilinear interpolation (zero outside the image). ``simulate_options`` go to ``simulate``.
    Returns events sorted by time, from 0 to about ``3 * saccade_ms`` ms.
    """
    img, (width, height) = _check_image(image, sensor)
    ts, offsets = saccade_path(saccade_ms, amplitude_px, fps)
    h, w = img.shape
    rows = _shift_matrices(offsets[:, 1] + (height - h) / 2.0, height, h)
    cols = _shift_matrices(offsets[:, 0] + (width - w) / 2.0, width, w)
    frames = np.clip(rows @ img @ cols.transpose(0, 2, 1), 0.0, 1.0)
    return simulate(frames, ts, seed=seed, **simulate_options)


def smooth_motion(
    rng: np.random.Generator,
    *,
    duration_ms: float = 300.0,
    fps: float = 250.0,
    amplitude_px: float = 4.0,
    rotation_deg: float = 15.0,
    zoom: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A smooth random motion of an object before the sensor: frame times (int64 us from 0),
    offsets [F, 2] (dx, dy in pixels), angles [F] (radians) and zooms [F]. Each of x, y, angle and
    log-zoom is a sum of two sinusoids of random frequency (0.5 to 3 cycles over the recording)
    and phase, scaled to reach about ``amplitude_px``, ``rotation_deg`` and ``1 +- zoom``."""
    if not duration_ms > 0 or not fps > 0 or min(amplitude_px, rotation_deg, zoom) < 0:
        raise ValueError("need duration_ms, fps > 0 and amplitude_px, rotation_deg, zoom >= 0")
    n_frames = max(int(round(duration_ms * fps / 1000.0)), 3) + 1
    ts = np.rint(np.linspace(0.0, duration_ms * 1000.0, n_frames)).astype(np.int64)
    s = np.linspace(0.0, 1.0, n_frames)
    freq = rng.uniform(0.5, 3.0, (4, 2))
    phase = rng.uniform(0, 2 * np.pi, (4, 2))
    waves = np.sin(2 * np.pi * freq[:, :, None] * s + phase[:, :, None]).sum(axis=1) / 2
    offsets = amplitude_px * waves[:2].T
    angles = np.deg2rad(rotation_deg) * waves[2]
    zooms = np.exp(np.log1p(zoom) * waves[3])
    return ts, offsets, angles, zooms


def record_motion(
    image,
    ts: np.ndarray,
    offsets: np.ndarray,
    angles: np.ndarray,
    zooms: np.ndarray,
    *,
    sensor: tuple[int, int] = (34, 34),
    seed: int,
    **simulate_options,
) -> np.ndarray:
    """Record a static ``image`` ([h, w] in [0, 1]) moving before a ``sensor`` = (width, height)
    DVS: frame f (at ``ts[f]`` us) shows it rotated by ``angles[f]`` and scaled by ``zooms[f]``
    about its centre, placed at the sensor's centre plus ``offsets[f]``, sampled bilinearly (zero
    outside the image). ``simulate_options`` go to ``simulate``."""
    img, (width, height) = _check_image(image, sensor)
    n = len(ts)
    if offsets.shape != (n, 2) or angles.shape != (n,) or zooms.shape != (n,):
        raise ValueError("offsets, angles and zooms must have one entry per frame time")
    h, w = img.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    du = u[None] - (width - 1) / 2 - offsets[:, 0, None, None]
    dv = v[None] - (height - 1) / 2 - offsets[:, 1, None, None]
    c, s = (np.cos(angles) / zooms)[:, None, None], (np.sin(angles) / zooms)[:, None, None]
    x = c * du + s * dv + (w - 1) / 2
    y = -s * du + c * dv + (h - 1) / 2
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    padded = np.pad(img, 1)  # zero outside: indices shifted by one into the padding

    def at(yy, xx):
        return padded[np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)]

    frames = (
        at(y0, x0) * (1 - fx) * (1 - fy)
        + at(y0, x0 + 1) * fx * (1 - fy)
        + at(y0 + 1, x0) * (1 - fx) * fy
        + at(y0 + 1, x0 + 1) * fx * fy
    )
    return simulate(np.clip(frames, 0.0, 1.0), ts, seed=seed, **simulate_options)
