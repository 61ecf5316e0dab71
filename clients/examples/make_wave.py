"""Generate ``wave.aedat4`` beside this script: the example recording of ``spikeshot-client info``.

A 346x260 DVS (a DAVIS346's geometry) watches a bright field under a sine-shaped edge that
travels across the sensor for one second. A pixel whose centre the edge crosses fires once, at
the crossing time found by linear interpolation between 1 ms samples: ON when the bright field
grows over it, OFF when it recedes. No randomness, so every run writes the same events.

    python clients/examples/make_wave.py [OUT.aedat4]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from spikeshot.events.aedat4 import write
from spikeshot.events.array import make_events

WIDTH, HEIGHT = 346, 260
DURATION_US = 1_000_000
STEP_US = 1_000
AMPLITUDE_PX = 15.0
WAVELENGTH_PX = 173.0
PERIOD_US = 1_000_000


def wave_events() -> np.ndarray:
    """The recording's events, time-ordered."""
    times = np.arange(0, DURATION_US + STEP_US, STEP_US)
    phase = np.arange(WIDTH) / WAVELENGTH_PX - times[:, None] / PERIOD_US
    edge = HEIGHT / 2 + AMPLITUDE_PX * np.sin(2 * np.pi * phase)  # [time, column]; bright below
    before, after = edge[:-1].ravel(), edge[1:].ravel()
    low = np.ceil(np.minimum(before, after)).astype(np.int64)
    high = np.ceil(np.maximum(before, after)).astype(np.int64)
    count = high - low  # rows whose centre the edge crossed in this step
    step = np.repeat(np.arange(before.size), count)
    y = np.repeat(low, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    fraction = (y - before[step]) / (after[step] - before[step])
    t = times[step // WIDTH] + np.floor(fraction * STEP_US).astype(np.int64)
    x = step % WIDTH
    on = after[step] < before[step]  # the edge rose, so the bright field grew over the pixel
    order = np.argsort(t, kind="stable")
    return make_events(t[order], x[order], y[order], on[order])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).with_name("wave.aedat4")
    write(out, wave_events(), WIDTH, HEIGHT)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
