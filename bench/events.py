"""Event-pipeline throughput: file readers, binning (ours and tonic's ToFrame), the wire codec, and
the server's decode + validate + bin path, all on one pinned core.

    python bench/events.py [--quick] [--json PATH]

Synthetic events: uniform over a 346x260 sensor and one second, time-sorted (10 million, or 1
million with --quick). Binning: the full sensor in 10 bins of 100 ms, float32 frames for ours and
tonic's int16 frames, checked equal before timing. Readers run on the real recordings in
``shared/realdata`` beside the repository (skipped when absent). Each figure is the median of
repeated runs after one warm-up, in million events per second (Mev/s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import tonic

from spikeshot.events.array import Limits, make_events, validate
from spikeshot.events.binning import FrameGeometry, bin_events
from spikeshot.events.codec import decode, decode_columns, encode

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
WIDTH, HEIGHT, DURATION_US, BINS = 346, 260, 1_000_000, 10
TARGETS = {"bin_speedup_vs_tonic": 3.0, "pipeline_mev_s": 60.0}


def pin_one_core() -> int | None:
    """Pin this process, and so every thread it runs, to one CPU (the lowest allowed); None where
    the OS cannot."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def synthetic_events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, DURATION_US, n)),
        rng.integers(0, WIDTH, n),
        rng.integers(0, HEIGHT, n),
        rng.integers(0, 2, n),
    )


def bench_readers(repeats: int) -> dict:
    """Mev/s of ``formats.read`` on each real recording, and over all of them together."""
    if not REALDATA.is_dir():
        return {}
    from spikeshot.events import formats

    out, total_events, total_seconds = {}, 0, 0.0
    for path in sorted(p for p in REALDATA.iterdir() if p.suffix not in (".md", ".json")):
        n = len(formats.read(path).events)
        seconds = median_seconds(lambda path=path: formats.read(path), repeats)
        out[f"read_{path.name}_mev_s"] = n / seconds / 1e6
        total_events, total_seconds = total_events + n, total_seconds + seconds
    out["read_all_mev_s"] = total_events / total_seconds / 1e6
    return out


def bench_events(n: int, repeats: int) -> dict:
    events = synthetic_events(n)
    geometry = FrameGeometry(
        sensor_width=WIDTH, sensor_height=HEIGHT, bins=BINS, window_us=DURATION_US
    )
    t0 = int(events["t"][0])
    to_frame = tonic.transforms.ToFrame(
        sensor_size=(WIDTH, HEIGHT, 2),
        time_window=geometry.bin_us,
        start_time=t0,
        end_time=t0 + DURATION_US,
    )
    np.testing.assert_array_equal(bin_events(events, geometry), to_frame(events))
    encoded = encode(events)
    limits = Limits(width=WIDTH, height=HEIGHT)

    def pipeline():
        bin_events(validate(decode_columns(*encoded), limits), geometry)

    seconds = {
        "bin": median_seconds(lambda: bin_events(events, geometry), repeats),
        "tonic_bin": median_seconds(lambda: to_frame(events), max(1, repeats // 2)),
        "encode": median_seconds(lambda: encode(events), repeats),
        "decode": median_seconds(lambda: decode(*encoded), repeats),
        "validate": median_seconds(lambda: validate(events, limits), repeats),
        "pipeline": median_seconds(pipeline, repeats),
    }
    out = {f"{name}_mev_s": n / s / 1e6 for name, s in seconds.items()}
    out["bin_speedup_vs_tonic"] = seconds["tonic_bin"] / seconds["bin"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M events, fewer repeats (< 30 s)")
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "events.json",
        help="where to write the results (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    n, repeats = (1_000_000, 3) if args.quick else (10_000_000, 7)
    cpu = pin_one_core()

    results = {**bench_readers(repeats), **bench_events(n, repeats)}
    report = {
        "n_events": n,
        "sensor": [WIDTH, HEIGHT],
        "bins": BINS,
        "quick": args.quick,
        "repeats": repeats,
        "pinned_cpu": cpu,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews the figures
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tonic": tonic.__version__,
        **results,
        "targets": TARGETS,
        "meets_targets": {k: results[k] >= v for k, v in TARGETS.items()},
    }

    print(f"{n:,} events at {WIDTH}x{HEIGHT}, median of {repeats}, CPU {cpu}")
    print(f"{'figure':<40} {'value':>10}  target")
    for key, value in results.items():
        unit = "x" if key == "bin_speedup_vs_tonic" else "Mev/s"
        target = f">= {TARGETS[key]:g}" if key in TARGETS else ""
        print(f"{key:<40} {value:>10.2f}  {unit:<5} {target}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.json)
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
