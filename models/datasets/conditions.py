"""Domain randomisation: the conditions of one recording (the stimulus' size, thickness, position
and contrast; the simulated sensor's thresholds, mismatch, refractory period, noise, hot pixels,
ON/OFF imbalance, dropped events and timestamp jitter; the motion's amplitude and speed), drawn
per recording from ranges.

``TRAINING`` holds the ranges meta-training draws from; ``SHIFTED`` lies outside them on every
simulator setting, for a cross-simulator validation split that measures how a model copes with a
sensor it has not met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Range = tuple[float, float]


@dataclass(frozen=True)
class ConditionRanges:
    """Uniform ranges (low, high) of a recording's conditions.

    ``scale`` multiplies the glyph's size (1 = the config's ``em_px``); ``thickness_px`` grows
    (positive) or thins (negative) the ink by whole pixels; ``shift_px`` is the largest offset
    from the centre; the image is ``background + contrast * ink``, inverted (a dark shape on a
    light ground) with probability ``invert``. The rest go to ``dvs_sim.record_saccades`` and
    ``dvs_sim.simulate``.
    """

    scale: Range = (0.6, 1.2)
    thickness_px: Range = (-1, 1)
    shift_px: float = 2.5
    contrast: Range = (0.5, 1.0)
    background: Range = (0.0, 0.25)
    invert: float = 0.2
    threshold: Range = (0.12, 0.28)
    threshold_sigma: Range = (0.0, 0.05)
    on_off_ratio: Range = (0.8, 1.25)
    refractory_us: Range = (0, 2000)
    noise_rate_hz: Range = (0.0, 0.6)
    hot_pixels: Range = (0, 2)
    hot_rate_hz: Range = (10.0, 100.0)
    keep_fraction: Range = (0.7, 1.0)
    jitter_us: Range = (0.0, 1000.0)
    amplitude_px: Range = (2.5, 5.5)
    saccade_ms: Range = (85.0, 100.0)


TRAINING = ConditionRanges()
SHIFTED = ConditionRanges(
    threshold=(0.3, 0.34),
    threshold_sigma=(0.06, 0.075),
    on_off_ratio=(1.28, 1.4),
    refractory_us=(2100, 2800),
    noise_rate_hz=(0.7, 1.0),
    hot_pixels=(3, 4),
    hot_rate_hz=(110.0, 150.0),
    keep_fraction=(0.6, 0.68),
    jitter_us=(1100.0, 1500.0),
    amplitude_px=(5.6, 6.5),
    saccade_ms=(75.0, 84.0),
)


@dataclass(frozen=True)
class Conditions:
    """One recording's drawn conditions."""

    scale: float
    thickness_px: int
    shift: tuple[float, float]
    contrast: float
    background: float
    invert: bool
    motion: dict
    sensor: dict


def draw(rng: np.random.Generator, r: ConditionRanges) -> Conditions:
    def u(span):
        return float(rng.uniform(*span))

    def n(span):
        return int(rng.integers(int(span[0]), int(span[1]), endpoint=True))

    contrast = u(r.contrast)
    return Conditions(
        scale=u(r.scale),
        thickness_px=n(r.thickness_px),
        shift=tuple(float(v) for v in rng.uniform(-r.shift_px, r.shift_px, 2)),
        contrast=contrast,
        background=float(rng.uniform(r.background[0], min(r.background[1], 1 - contrast))),
        invert=bool(rng.random() < r.invert),
        motion={"amplitude_px": u(r.amplitude_px), "saccade_ms": u(r.saccade_ms)},
        sensor={
            "threshold": u(r.threshold),
            "threshold_sigma": u(r.threshold_sigma),
            "on_off_ratio": u(r.on_off_ratio),
            "refractory_us": n(r.refractory_us),
            "noise_rate_hz": u(r.noise_rate_hz),
            "hot_pixels": n(r.hot_pixels),
            "hot_rate_hz": u(r.hot_rate_hz),
            "keep_fraction": u(r.keep_fraction),
            "jitter_us": u(r.jitter_us),
        },
    )


def thicken(ink: np.ndarray, px: int) -> np.ndarray:
    """``ink`` ([h, w] in [0, 1]) grown by ``px`` pixels (a 3x3 grey dilation per pixel), or thinned
    by ``-px`` (erosion); a thinning that would leave almost nothing is skipped."""
    out = ink
    h, w = ink.shape
    for _ in range(abs(px)):
        padded = np.pad(out, 1)
        shifted = [padded[i : i + h, j : j + w] for i in range(3) for j in range(3)]
        out = np.max(shifted, axis=0) if px > 0 else np.min(shifted, axis=0)
    if px < 0 and out.sum() < 0.3 * ink.sum():
        return ink
    return out


def shade(ink: np.ndarray, c: Conditions) -> np.ndarray:
    """The intensity image of ``ink`` under ``c``: thickness, then contrast and polarity."""
    ink = thicken(ink, c.thickness_px)
    if c.invert:
        ink = 1.0 - ink
    return np.clip(c.background + c.contrast * ink, 0.0, 1.0)
